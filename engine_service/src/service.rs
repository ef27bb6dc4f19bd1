//! The gRPC face of the engine: `EngineService` over the library operations.
//!
//! Each streaming RPC follows one pattern: validate up front (errors become
//! a Status before any message), then a blocking producer thread feeds a
//! bounded tokio channel whose receiver is the response stream. A failed
//! send means the client went away; the producer raises its cancel flag and
//! the walk and batch jobs stop. CPU and file work never runs on the tokio
//! runtime's threads.
//!
//! Tracing: each call gets a server span whose parent comes from the
//! caller's `traceparent` metadata ([`telemetry::server_span`]); the producer
//! thread enters it, so listing, item and batch spans are its children, and
//! it ends when the producer does (the stream's last message).
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::config;
use crate::error::EngineError;
use crate::listing::{self, ListParams};
use crate::metrics::METRICS;
use crate::pb::{self, engine_service_server::EngineService};
use crate::process::{self, ProcessConfig, Sink};
use crate::producers;
use crate::tasks;
use crate::telemetry;

/// Messages buffered between a producer and the gRPC stream.
const STREAM_BUFFER: usize = 32;

/// The service; stateless, every request carries what it needs.
#[derive(Debug, Default, Clone)]
pub struct Engine;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

struct ChannelSink(mpsc::Sender<Result<pb::ProcessResponse, Status>>);

impl Sink for ChannelSink {
    fn send(&self, msg: pb::ProcessResponse) -> bool {
        self.0.blocking_send(Ok(msg)).is_ok()
    }

    fn gone(&self) -> bool {
        // tonic drops the response stream, and so the receiver, when the
        // client cancels the call or its connection closes.
        self.0.is_closed()
    }
}

/// What GetCapabilities answers; also used by the CLI.
pub fn capabilities() -> pb::GetCapabilitiesResponse {
    pb::GetCapabilitiesResponse {
        engine_version: env!("CARGO_PKG_VERSION").to_owned(),
        tasks: tasks::TASKS
            .iter()
            .map(|t| pb::TaskCapability {
                name: t.name.to_owned(),
                version: t.version.to_owned(),
                description: t.description.to_owned(),
                options_schema_json: (t.options_schema)().to_string(),
                result_schema_json: (t.result_schema)().to_string(),
                writes_files: t.writes_files,
                size_independent: t.size_independent,
            })
            .collect(),
        limits: Some(pb::EngineLimits {
            worker_threads: config::worker_threads() as u32,
            max_batch_files: config::MAX_BATCH_FILES,
            max_work_items: config::MAX_WORK_ITEMS,
        }),
    }
}

#[tonic::async_trait]
impl EngineService for Engine {
    async fn get_capabilities(
        &self,
        request: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        let span = telemetry::server_span(request.metadata(), "GetCapabilities");
        let _entered = span.enter();
        telemetry::record_status(&span, None);
        METRICS.grpc_request("GetCapabilities", tonic::Code::Ok);
        Ok(Response::new(capabilities()))
    }

    type ListStream = BoxStream<pb::ListResponse>;

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let span = telemetry::server_span(request.metadata(), "List");
        let req = request.into_inner();
        span.in_scope(|| tracing::info!(source = %req.source, chunk_dir = %req.chunk_dir, "list"));
        // Validation touches the file system: keep it off the runtime threads.
        let params = tokio::task::spawn_blocking(move || ListParams::from_request(&req))
            .await
            .map_err(|e| Status::internal(format!("list validation failed: {e}")))
            .and_then(|r| r.map_err(Status::from))
            .inspect_err(|status| finish_call(&span, "List", Some(status)))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let cancel = Arc::new(AtomicBool::new(false));
        producers::spawn("pravah-list", move || {
            let _entered = span.enter();
            let result = listing::run(params, cancel, &mut |msg| tx.blocking_send(Ok(msg)).is_ok());
            match result {
                Err(e) => {
                    tracing::warn!(error = %e, "list failed");
                    let status = Status::from(e);
                    finish_call(&span, "List", Some(&status));
                    let _ = tx.blocking_send(Err(status));
                }
                Ok(()) => finish_call(&span, "List", None),
            }
        })
        .map_err(|e| Status::internal(format!("cannot start list thread: {e}")))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ProcessStream = BoxStream<pb::ProcessResponse>;

    async fn process(
        &self,
        request: Request<Streaming<pb::ProcessRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let span = telemetry::server_span(request.metadata(), "Process");
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await
            .inspect_err(|status| finish_call(&span, "Process", Some(status)))?;
        let start = match first {
            Some(pb::ProcessRequest {
                message: Some(pb::process_request::Message::Start(start)),
            }) => start,
            Some(_) => {
                let status: Status = EngineError::InvalidArgument(
                    "the first message must be start (ProcessStart)".into(),
                )
                .into();
                finish_call(&span, "Process", Some(&status));
                return Err(status);
            }
            None => {
                let status: Status = EngineError::InvalidArgument(
                    "empty request stream: send start (ProcessStart) first".into(),
                )
                .into();
                finish_call(&span, "Process", Some(&status));
                return Err(status);
            }
        };
        span.record("pravah.task", start.task.as_str());
        if !start.job_id.is_empty() {
            span.record("job_id", start.job_id.as_str());
            span.record("pravah.job_id", start.job_id.as_str());
        }
        span.in_scope(
            || tracing::info!(task = %start.task, results_dir = %start.results_dir, "process"),
        );
        let config = tokio::task::spawn_blocking(move || ProcessConfig::from_start(&start))
            .await
            .map_err(|e| Status::internal(format!("process validation failed: {e}")))
            .and_then(|r| r.map_err(Status::from))
            .inspect_err(|status| finish_call(&span, "Process", Some(status)))?;

        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (items_tx, items_rx) = crossbeam_channel::unbounded();
        // Raised when the client is gone or sent something invalid; read by
        // the orchestrator, the walker and every batch job.
        let cancel = Arc::new(AtomicBool::new(false));

        // Reader: forwards validated work items to the orchestrator; closing
        // items_tx (on half-close) tells it no more work comes.
        let reader_tx = tx.clone();
        let reader_cancel = cancel.clone();
        let reader_span = span.clone();
        tokio::spawn(async move {
            let mut count: u32 = 0;
            loop {
                let problem = match inbound.message().await {
                    Ok(Some(pb::ProcessRequest {
                        message: Some(pb::process_request::Message::Work(item)),
                    })) => {
                        count += 1;
                        if count > config::MAX_WORK_ITEMS {
                            Some(EngineError::InvalidArgument(format!(
                                "too many work items: at most {} per Process call",
                                config::MAX_WORK_ITEMS
                            )))
                        } else if let Err(e) = process::validate_work_id(&item.id) {
                            Some(e)
                        } else {
                            if items_tx.send(item).is_err() {
                                break;
                            }
                            None
                        }
                    }
                    Ok(Some(pb::ProcessRequest {
                        message: Some(pb::process_request::Message::Start(_)),
                    })) => Some(EngineError::InvalidArgument(
                        "start may only be the first message".into(),
                    )),
                    Ok(Some(_)) => Some(EngineError::InvalidArgument(
                        "empty ProcessRequest: set start or work".into(),
                    )),
                    Ok(None) => break,
                    Err(status) => {
                        reader_span.in_scope(|| tracing::info!(%status, "process request stream ended with an error; cancelling"));
                        reader_cancel.store(true, Ordering::Relaxed);
                        break;
                    }
                };
                if let Some(e) = problem {
                    reader_cancel.store(true, Ordering::Relaxed);
                    let _ = reader_tx.send(Err(e.into())).await;
                    break;
                }
            }
        });

        producers::spawn("pravah-process", move || {
            let _entered = span.enter();
            let sink = Arc::new(ChannelSink(tx));
            let watch = cancel.clone();
            process::run(config, items_rx, sink, cancel);
            let status = watch
                .load(Ordering::Relaxed)
                .then(|| Status::cancelled("the client went away or sent invalid work"));
            finish_call(&span, "Process", status.as_ref());
        })
        .map_err(|e| Status::internal(format!("cannot start process thread: {e}")))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Records a call's outcome on its span and in the request counter.
fn finish_call(span: &tracing::Span, method: &str, status: Option<&Status>) {
    telemetry::record_status(span, status);
    METRICS.grpc_request(method, status.map_or(tonic::Code::Ok, Status::code));
}
