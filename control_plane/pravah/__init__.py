"""Pravah control plane: job store, REST API, workers and CLI that drive Rust engines over gRPC."""

__version__ = "0.1.0"
