# syntax=docker/dockerfile:1.7
# One image for every Pravah role; the command picks it (deploy/docker-entrypoint.sh):
#   docker run -p 8000:8000 -v "$PWD/data:/data:ro" pravah              # combined MVP
#   docker run pravah engine | serve | worker | migrate | pravah tasks   # single roles
#
# Stages: (1) Rust build - maturin builds the same release wheel `make dist`
# does (stubs generated from proto/, engine with fat LTO and one codegen unit);
# (2) Python build - a venv with that wheel and its pinned dependencies;
# (3) slim runtime - the venv, tini as PID 1 (signal forwarding, zombie
# reaping) and a non-root user. Nothing from the build stages but the venv.
ARG RUST_VERSION=1.95
ARG PYTHON_VERSION=3.11

# ---- 1. Rust build: the wheel with the release engine inside -------------
FROM rust:${RUST_VERSION}-slim-bookworm AS wheel
# bookworm's python3 is 3.11, the runtime's version: it runs maturin and protoc.
# cmake and nasm build the engine's bundled libjpeg-turbo (linked statically,
# so the runtime stage needs no JPEG library).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv cmake nasm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY constraints.txt ./
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir -c constraints.txt maturin grpcio-tools
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY proto proto
COPY engine_service engine_service
COPY control_plane control_plane
COPY scripts/gen_proto.py scripts/gen_proto.py
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    /opt/build/bin/python scripts/gen_proto.py \
    && /opt/build/bin/maturin build --release --locked --out /dist

# ---- 2. Python build: a venv holding the wheel and its dependencies ------
FROM python:${PYTHON_VERSION}-slim-bookworm AS venv
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /dist /dist
RUN python -m venv /opt/pravah \
    && /opt/pravah/bin/pip install --no-cache-dir -c /tmp/constraints.txt /dist/pravah-*.whl

# ---- 3. Runtime -----------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pravah \
    && useradd --system --uid 10001 --gid pravah --home-dir /var/lib/pravah \
        --create-home --shell /usr/sbin/nologin pravah
COPY --from=venv /opt/pravah /opt/pravah
COPY deploy/docker-entrypoint.sh /usr/local/bin/pravah-entrypoint
ENV PATH=/opt/pravah/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PRAVAH_HOST=0.0.0.0 \
    PRAVAH_PORT=8000 \
    PRAVAH_STATE_DIR=/var/lib/pravah
USER 10001:10001
WORKDIR /var/lib/pravah
EXPOSE 8000 50051
STOPSIGNAL SIGTERM
# The combined and serve roles answer /readyz (database and engine) on
# PRAVAH_PORT, the healthcheck's default target; compose and Kubernetes set
# their own probes for the engine and worker roles.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "pravah.healthcheck", "--quiet"]
ENTRYPOINT ["/usr/bin/tini", "--", "pravah-entrypoint"]
CMD ["combined"]
