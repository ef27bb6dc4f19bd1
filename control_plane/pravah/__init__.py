"""Pravah control plane: job store, REST API, workers and CLI that drive Rust engines over gRPC."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One version for the whole project: the Cargo workspace version, which
    # maturin writes into the package metadata (wheel and editable install alike).
    __version__ = version("pravah")
except PackageNotFoundError:  # pragma: no cover - source tree on sys.path, not installed
    __version__ = "0+unknown"
