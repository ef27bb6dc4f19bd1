//! Pravah engine: lists sources and runs file tasks on all cores, served
//! over gRPC (`pravah.engine.v1.EngineService`) or used in-process.
//!
//! Layout, from the edge inward:
//! - [`server`]: the tonic router (engine, health, reflection) and shutdown.
//! - [`service`]: the gRPC methods; validation, then a producer thread per
//!   stream feeding a bounded channel.
//! - [`listing`] and [`process`]: the List and Process operations, free of
//!   gRPC, so the CLI runs the same code.
//! - [`walk`]: the parallel walker; [`filters`]: compiled filters.
//! - [`chunks`]: listing chunk files; [`results`]: per-file outcomes and the
//!   atomic part-file writer; [`progress`]: counters and the rate-bounded
//!   ticker; [`output`]: atomic, contained output files for tasks that
//!   write.
//! - [`tasks`]: the task registry and the tasks themselves.
//! - [`telemetry`]: JSON logs and OpenTelemetry spans (trace context from
//!   gRPC metadata); [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`storage`]: S3-compatible object stores as sources and destinations
//!   (listing, ranged reads, staging, uploads) beside local folders.
//! - [`sandbox`]: allowed roots and buckets (checked after resolving symlinks) and
//!   opening files without blocking on FIFOs or devices.
//! - [`config`]: command line, environment and limits; [`error`]: the one
//!   error type, turned into a gRPC status in one place.
// These docs are read by the engine's own developers, with
// `--document-private-items` (`make lint` builds them so): module docs that
// explain why point at the private items that do it.
#![allow(rustdoc::private_intra_doc_links)]
pub mod beneath;
pub mod chunks;
pub mod config;
pub mod entry_meta;
pub mod error;
pub mod filters;
pub mod listing;
pub mod metrics;
pub mod output;
pub mod process;
pub mod producers;
pub mod progress;
pub mod results;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod storage;
pub mod syncer;
pub mod tasks;
pub mod telemetry;
pub mod walk;

/// Code generated from `proto/pravah/engine/v1/engine.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("pravah.engine.v1");
}
