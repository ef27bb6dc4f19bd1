//! Prometheus metrics of the engine and the small HTTP server that serves them.
//!
//! Why a process-wide registry: the engine is stateless and every Process or
//! List call adds to the same totals, which Prometheus scrapes from
//! `--metrics-listen` (`PRAVAH_ENGINE_METRICS_LISTEN`; off unless set) at
//! `GET /metrics` in the OpenMetrics text format.
//!
//! Cost: counters are updated once per batch of up to a thousand files (the
//! label lookup happens once per Process call, see [`TaskMetrics`]), never per
//! file, so metrics add nothing measurable to throughput.
//!
//! Names follow Prometheus conventions (`_total`, `_seconds`, `_bytes`; the
//! client appends `_total` to counters and the unit to unit-bearing metrics):
//! - `pravah_engine_files_processed_total{task}`: finished files, failed
//!   ones included (the engine's counting convention);
//! - `pravah_engine_files_failed_total{task}`, `pravah_engine_processed_bytes_total{task}`,
//!   `pravah_engine_failed_bytes_total{task}`;
//! - `pravah_engine_batch_duration_seconds{task}` and
//!   `pravah_engine_process_duration_seconds{task}`: histograms of one batch
//!   (a chunk's slice of up to a thousand files) and of a whole Process call;
//! - `pravah_engine_batches_in_flight`: batches being processed now;
//! - `pravah_engine_walk_files_total`, `pravah_engine_walk_directories_total`
//!   (walker rate = `rate()` of these) and `pravah_engine_walk_files_per_second`
//!   (the rate of the last finished walk);
//! - `pravah_engine_grpc_requests_total{method,code}`;
//! - `pravah_engine_s3_get_requests_total` and `pravah_engine_s3_get_bytes_total`:
//!   GET requests sent to the object store (whole, ranged, streamed) and the
//!   body bytes they returned (counted per request, not per file).
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

fn batch_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn call_histogram() -> Histogram {
    // 10 ms .. ~3 h
    Histogram::new(exponential_buckets(0.01, 2.0, 21))
}

/// Every metric of the engine; see the module doc for names.
pub struct Metrics {
    registry: Registry,
    pub files_processed: Family<TaskLabel, Counter>,
    pub files_failed: Family<TaskLabel, Counter>,
    pub bytes_processed: Family<TaskLabel, Counter>,
    pub bytes_failed: Family<TaskLabel, Counter>,
    pub batch_duration: Family<TaskLabel, Histogram, fn() -> Histogram>,
    pub process_duration: Family<TaskLabel, Histogram, fn() -> Histogram>,
    pub batches_in_flight: Gauge,
    pub walk_files: Counter,
    pub walk_directories: Counter,
    pub walk_rate: Gauge<f64, AtomicU64>,
    pub grpc_requests: Family<RpcLabels, Counter>,
    pub s3_get_requests: Counter,
    pub s3_get_bytes: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("pravah_engine");
        let m = Metrics {
            registry: Registry::default(),
            files_processed: Family::default(),
            files_failed: Family::default(),
            bytes_processed: Family::default(),
            bytes_failed: Family::default(),
            batch_duration: Family::new_with_constructor(batch_histogram),
            process_duration: Family::new_with_constructor(call_histogram),
            batches_in_flight: Gauge::default(),
            walk_files: Counter::default(),
            walk_directories: Counter::default(),
            walk_rate: Gauge::default(),
            grpc_requests: Family::default(),
            s3_get_requests: Counter::default(),
            s3_get_bytes: Counter::default(),
        };
        registry.register(
            "files_processed",
            "Files finished by a task, failed ones included",
            m.files_processed.clone(),
        );
        registry.register(
            "files_failed",
            "Files a task could not process",
            m.files_failed.clone(),
        );
        registry.register_with_unit(
            "processed",
            "Bytes of files finished by a task, failed ones included",
            Unit::Bytes,
            m.bytes_processed.clone(),
        );
        registry.register_with_unit(
            "failed",
            "Bytes of files a task could not process",
            Unit::Bytes,
            m.bytes_failed.clone(),
        );
        registry.register_with_unit(
            "batch_duration",
            "Time to process one batch (up to a thousand files of one chunk)",
            Unit::Seconds,
            m.batch_duration.clone(),
        );
        registry.register_with_unit(
            "process_duration",
            "Time of a whole Process call, from start to summary",
            Unit::Seconds,
            m.process_duration.clone(),
        );
        registry.register(
            "batches_in_flight",
            "Batches being processed right now",
            m.batches_in_flight.clone(),
        );
        registry.register(
            "walk_files",
            "Files found by the directory walker",
            m.walk_files.clone(),
        );
        registry.register(
            "walk_directories",
            "Directories read by the directory walker",
            m.walk_directories.clone(),
        );
        registry.register(
            "walk_files_per_second",
            "Files per second of the last finished walk",
            m.walk_rate.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC calls received, by method and status code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "s3_get_requests",
            "GET requests sent to the object store",
            m.s3_get_requests.clone(),
        );
        registry.register_with_unit(
            "s3_get",
            "Body bytes returned by GET requests to the object store",
            Unit::Bytes,
            m.s3_get_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics of one task, resolved once per call.
    pub fn task(&self, task: &str) -> TaskMetrics {
        let label = TaskLabel {
            task: task.to_owned(),
        };
        TaskMetrics {
            files_processed: self.files_processed.get_or_create(&label).clone(),
            files_failed: self.files_failed.get_or_create(&label).clone(),
            bytes_processed: self.bytes_processed.get_or_create(&label).clone(),
            bytes_failed: self.bytes_failed.get_or_create(&label).clone(),
            batch_duration: self.batch_duration.get_or_create(&label).clone(),
            process_duration: self.process_duration.get_or_create(&label).clone(),
        }
    }

    /// Counts one gRPC call by method and status code name.
    pub fn grpc_request(&self, method: &str, code: tonic::Code) {
        self.grpc_requests
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One task's metric handles (cheap clones of the shared atomics).
#[derive(Clone)]
pub struct TaskMetrics {
    pub files_processed: Counter,
    pub files_failed: Counter,
    pub bytes_processed: Counter,
    pub bytes_failed: Counter,
    pub batch_duration: Histogram,
    pub process_duration: Histogram,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                METRICS.encode(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_prometheus_names() {
        let m = METRICS.task("unit-test-task");
        m.files_processed.inc_by(3);
        m.bytes_processed.inc_by(10);
        m.batch_duration.observe(0.5);
        let text = METRICS.encode();
        assert!(text.contains("pravah_engine_files_processed_total{task=\"unit-test-task\"} 3"));
        assert!(text.contains("pravah_engine_processed_bytes_total{task=\"unit-test-task\"} 10"));
        assert!(text.contains("# TYPE pravah_engine_batch_duration_seconds histogram"));
        assert!(text.contains("pravah_engine_batches_in_flight"));
        assert!(text.ends_with("# EOF\n"));
    }
}
