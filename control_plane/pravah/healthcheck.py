"""`python -m pravah.healthcheck URL`: exit 0 when a Pravah process is healthy.

Why it exists: the container image is slim (no curl, no grpc_health_probe), yet
Docker's HEALTHCHECK, docker compose and the combined entrypoint need to ask
"is the API ready?" and "does the engine serve?". Both answers come from the
real health endpoints: an HTTP URL (the API's /healthz or /readyz) must answer
2xx, and a `grpc://host:port` address must answer the standard
`grpc.health.v1.Health/Check` with SERVING. The gRPC call is made with raw
bytes (an empty request, one enum field in the reply), so the runtime needs
no health-checking stubs.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

_SERVING = 1


def check_http(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable: {getattr(exc, 'reason', exc)}"


def _health_status(reply: bytes) -> int:
    """The `status` field (number 1, varint) of a HealthCheckResponse; 0 if absent."""
    i = 0
    while i < len(reply):
        key = reply[i]
        i += 1
        field, wire = key >> 3, key & 7
        if wire != 0:  # only varints are expected in this message
            break
        value, shift = 0, 0
        while i < len(reply):
            byte = reply[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if field == 1:
            return value
    return 0


def check_grpc(address: str, timeout: float) -> str | None:
    """None when the engine at ``address`` (host:port) reports SERVING, else why not."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        # No (de)serializers: the request and the reply stay raw bytes.
        check = channel.unary_unary("/grpc.health.v1.Health/Check", None, None)
        try:
            reply = check(b"", timeout=timeout)
        except grpc.RpcError as exc:
            return f"gRPC {exc.code().name}: {exc.details()}"
    status = _health_status(reply)
    return None if status == _SERVING else f"health status {status} (not SERVING)"


def check(target: str, timeout: float = 3.0) -> str | None:
    """Check an http(s):// URL or a grpc://host:port address; None means healthy."""
    if target.startswith(("http://", "https://")):
        return check_http(target, timeout)
    if target.startswith("grpc://"):
        return check_grpc(target.removeprefix("grpc://"), timeout)
    raise ValueError(f"expected an http://, https:// or grpc:// target, got {target!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pravah.healthcheck", description=__doc__)
    default = f"http://127.0.0.1:{os.environ.get('PRAVAH_PORT') or 8000}/readyz"
    parser.add_argument(
        "target",
        nargs="?",
        default=default,
        help="http://host:port/path or grpc://host:port (default: this host's API "
        "readiness, http://127.0.0.1:$PRAVAH_PORT/readyz)",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing when healthy")
    args = parser.parse_args(argv)
    try:
        problem = check(args.target, args.timeout)
    except ValueError as exc:
        parser.error(str(exc))
    if problem is None:
        if not args.quiet:
            print(f"healthy: {args.target}")
        return 0
    print(f"unhealthy: {args.target}: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
