//! Logs and traces: one `tracing` subscriber with two outputs.
//!
//! Why one module: the binary calls [`init`] once and gets JSON lines on
//! stderr (human-readable on a terminal, level from `LOG_LEVEL`) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, OpenTelemetry spans exported over OTLP/gRPC. With no endpoint the
//! OpenTelemetry layer is not installed at all, so tracing costs nothing more
//! than the spans `tracing` itself records for the logs.
//!
//! Trace context: the control plane sends W3C `traceparent` in the gRPC
//! metadata. [`server_span`] extracts it with a small [`Extractor`] over the
//! tonic metadata map (the way opentelemetry-rust's tracing-grpc example does)
//! and makes it the parent of the request's span, so one job is one trace
//! across the process boundary. The W3C `baggage` entry `pravah.job_id`
//! (set by the control plane's worker) names the job of calls, such as List,
//! whose messages do not carry it. The request span also records `trace_id`, and
//! every log line inside it carries it (the formatter below lifts span fields
//! to the top level of each JSON line).
//!
//! Span layout, all under the request span: `list.walk` for a listing,
//! `process.item` per work item (a chunk) and `process.batch` per batch of up
//! to a thousand files. Files get no span of their own: a batch records their
//! aggregate counts, so tracing costs O(batches), not O(files).
use std::io::IsTerminal;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The gRPC service name, for `rpc.service` and span names.
pub const RPC_SERVICE: &str = "pravah.engine.v1.EngineService";
/// `service.name` when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "pravah-engine";

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported (an OTLP endpoint is configured).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter; call once, outside async code.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("pravah-engine: flushing spans failed: {e}");
            }
        }
    }
}

/// True when the standard OTLP variables ask for trace export.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
        && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |v| v.trim() != "none")
}

/// Installs the global subscriber (logs, and spans when OTLP is configured).
///
/// The OTLP/gRPC exporter's channel lives on a tokio runtime, so the caller
/// passes one (entered here while the exporter is built) and keeps it alive
/// until [`Telemetry::shutdown`].
pub fn init(runtime: Option<&tokio::runtime::Handle>) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(propagator());
    let filter = || EnvFilter::try_from_env("LOG_LEVEL").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = !std::io::stderr().is_terminal();
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let (otel_layer, provider, problem) = match runtime.filter(|_| otlp_configured()) {
        Some(handle) => match build_provider(handle) {
            Ok(provider) => {
                let tracer = provider.tracer("pravah-engine");
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
                (Some(layer), Some(provider), None)
            }
            Err(e) => (None, None, Some(e)),
        },
        None => (None, None, None),
    };
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .init();
    if let Some(e) = problem {
        tracing::warn!(error = %e, "OTLP trace export disabled: the exporter could not be built");
    }
    Telemetry { provider }
}

fn build_provider(
    handle: &tokio::runtime::Handle,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let _entered = handle.enter();
    // Reads OTEL_EXPORTER_OTLP_{TRACES_,}ENDPOINT, _HEADERS, _TIMEOUT, ...
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    // The builder's default detectors read OTEL_RESOURCE_ATTRIBUTES too.
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The batch processor exports on its own thread (OTEL_BSP_* variables).
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// W3C trace context plus W3C baggage.
fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Reads W3C trace context keys from tonic's metadata map.
pub struct MetadataExtractor<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The caller's context from gRPC metadata: W3C baggage, and the remote
/// parent from `traceparent`.
///
/// Why not only the SDK's TraceContextPropagator: its parser (0.31) rejects
/// version-00 headers whose flags use bits other than `sampled`, but W3C
/// Trace Context level 2 defines the `random` bit (0x02) and the Python SDK
/// sends `-03`; the spec says to ignore unknown flags. So `traceparent` is
/// parsed here, keeping only the sampled bit.
pub fn extract_parent(metadata: &tonic::metadata::MetadataMap) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let extractor = MetadataExtractor(metadata);
    let cx = BaggagePropagator::new().extract(&extractor);
    let Some(header) = extractor.get("traceparent") else {
        return cx;
    };
    let parts: Vec<&str> = header.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && (parts[0] != "00" || parts.len() == 4)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2);
    if !valid {
        return cx;
    }
    let (Ok(trace_id), Ok(span_id), Ok(flags)) = (
        TraceId::from_hex(parts[1]),
        SpanId::from_hex(parts[2]),
        u8::from_str_radix(parts[3], 16),
    ) else {
        return cx;
    };
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return cx;
    }
    let state = extractor
        .get("tracestate")
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    cx.with_remote_span_context(sc)
}

/// The server span of one RPC, its parent taken from the caller's
/// `traceparent`; `trace_id` is recorded for the logs.
pub fn server_span(metadata: &tonic::metadata::MetadataMap, method: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "rpc.server",
        otel.name = %format!("{RPC_SERVICE}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = RPC_SERVICE,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        job_id = tracing::field::Empty,
        pravah.job_id = tracing::field::Empty,
        pravah.task = tracing::field::Empty,
        pravah.files = tracing::field::Empty,
        pravah.files_failed = tracing::field::Empty,
        pravah.bytes = tracing::field::Empty,
    );
    let parent = extract_parent(metadata);
    let remote_trace = parent.span().span_context().trace_id();
    let job_id = parent
        .baggage()
        .get("pravah.job_id")
        .map(|v| v.as_str().to_owned());
    // Before anything else touches the span: the OpenTelemetry layer starts
    // the span on first use, after which its parent can no longer change.
    // (Without the layer there is nothing to parent, and the error is moot.)
    let _ = span.set_parent(parent);
    if let Some(job_id) = job_id {
        span.record("job_id", job_id.as_str());
        span.record("pravah.job_id", job_id.as_str());
    }
    let own_trace = span.context().span().span_context().trace_id();
    let trace_id = if own_trace != opentelemetry::trace::TraceId::INVALID {
        own_trace
    } else {
        remote_trace
    };
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Records the gRPC outcome on a server span (OpenTelemetry status too).
pub fn record_status(span: &tracing::Span, status: Option<&tonic::Status>) {
    match status {
        None => {
            span.record("rpc.grpc.status_code", 0);
        }
        Some(s) => {
            span.record("rpc.grpc.status_code", s.code() as i32);
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// JSON lines with the fields of every enclosing span lifted to the top
/// level (innermost wins), so `job_id` and `trace_id` sit beside `message`:
/// `{"timestamp":..,"level":"INFO","target":..,"message":..,"job_id":..}`.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut out = Map::new();
        out.insert(
            "timestamp".into(),
            Value::String(format_timestamp(std::time::SystemTime::now())),
        );
        out.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        out.insert(
            "target".into(),
            Value::String(event.metadata().target().to_owned()),
        );
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(Value::String(span.name().to_owned()));
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields) {
                        for (k, v) in map {
                            if !k.starts_with("otel.") {
                                out.insert(k, v);
                            }
                        }
                    }
                }
            }
            out.insert("spans".into(), Value::Array(names));
        }
        let mut visitor = JsonVisitor(&mut out);
        event.record(&mut visitor);
        let line = serde_json::to_string(&out).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// RFC 3339 UTC with microseconds, without a date-time dependency.
fn format_timestamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_709_251_199_123_456);
        assert_eq!(format_timestamp(t), "2024-02-29T23:59:59.123456Z");
        assert_eq!(
            format_timestamp(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn extractor_reads_traceparent_from_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract_parent(&md);
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote());
    }

    #[test]
    fn extractor_accepts_level_2_random_flag() {
        // The Python SDK sets the W3C level-2 `random` bit: flags 03.
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(
            "traceparent",
            "00-2f328634b241478dc2c1a08369c50f60-35bfe6d9bf372ac9-03"
                .parse()
                .unwrap(),
        );
        let cx = extract_parent(&md);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert!(sc.is_sampled());
        assert_eq!(sc.span_id().to_string(), "35bfe6d9bf372ac9");
    }

    #[test]
    fn extractor_ignores_malformed_traceparent() {
        for bad in [
            "00-00000000000000000000000000000000-35bfe6d9bf372ac9-01",
            "00-2f328634b241478dc2c1a08369c50f60-35bfe6d9bf372ac9",
            "ff-2f328634b241478dc2c1a08369c50f60-35bfe6d9bf372ac9-01",
            "00-2f328634b241478dc2c1a08369c50f6-35bfe6d9bf372ac9-01",
        ] {
            let mut md = tonic::metadata::MetadataMap::new();
            md.insert("traceparent", bad.parse().unwrap());
            assert!(
                !extract_parent(&md).span().span_context().is_valid(),
                "{bad}"
            );
        }
    }

    #[test]
    fn server_span_takes_the_job_id_from_baggage() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("baggage", "pravah.job_id=abc-123".parse().unwrap());
        let cx = propagator().extract(&MetadataExtractor(&md));
        assert_eq!(
            cx.baggage()
                .get("pravah.job_id")
                .map(|v| v.as_str().to_owned()),
            Some("abc-123".to_owned())
        );
    }
}
