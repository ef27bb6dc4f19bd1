"""Pravah control plane: job store, REST API, workers and CLI that drive Rust engines over gRPC."""

from __future__ import annotations

from functools import cache


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        # One version for the whole project: the Cargo workspace version, which
        # maturin writes into the package metadata (wheel and editable install alike).
        return version("pravah")
    except PackageNotFoundError:  # pragma: no cover - source tree on sys.path, not installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    # Looked up on first use: reading package metadata scans site-packages,
    # a cost every `pravah run` would otherwise pay before doing any work.
    if name == "__version__":
        return _version()
    raise AttributeError(name)
