//! `pravah-engine`: a thin binary over the library. It parses configuration,
//! sets up logs and traces (`telemetry::init`: JSON logs on stderr, OTLP spans
//! when OTEL_EXPORTER_OTLP_ENDPOINT is set), and either serves gRPC
//! (`server::run`, plus `/metrics` with `--metrics-listen`) or runs `list` /
//! `process` in-process for benchmarks and direct use.
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use clap::Parser;

use pravah_engine::config::{self, Cli, Command, ListArgs, ProcessArgs, ServeArgs};
use pravah_engine::filters::Filters;
use pravah_engine::pb::{self, process_response::Event};
use pravah_engine::process::{self, ProcessConfig, Sink};
use pravah_engine::storage::{s3_list, Root};
use pravah_engine::{metrics, producers, sandbox, server, telemetry, walk};

/// How long serving waits, once the server has stopped, for cancelled
/// calls to finish removing their temporary outputs (they stop within one
/// read; the control plane's launcher kills the engine after 5 s anyway).
const PRODUCERS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the kernel to send this engine SIGTERM (its clean shutdown) when
/// the process that spawned it dies, when that process says so in
/// `PRAVAH_ENGINE_PARENT_PID` (`pravah run` does). A `pravah run` killed
/// outright (SIGKILL, the OOM killer) otherwise left its engine running
/// for ever, serving nobody. Exits at once if that parent is already gone.
fn exit_with_parent() {
    let Some(parent) = std::env::var("PRAVAH_ENGINE_PARENT_PID")
        .ok()
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    else {
        return;
    };
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid touch no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != parent {
            std::process::exit(0);
        }
    }
}

fn main() -> anyhow::Result<()> {
    exit_with_parent();
    let cli = Cli::parse();
    config::init_threads(cli.threads);
    sandbox::set_allowed_roots(&cli.allowed_roots)?;
    sandbox::set_allowed_buckets(&cli.allowed_buckets)?;
    let serving = !matches!(cli.command, Some(Command::List(_) | Command::Process(_)));
    // Serving needs a runtime; the in-process commands only for the OTLP
    // exporter's channel, and then one worker thread is plenty.
    let runtime = if serving || telemetry::otlp_configured() {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if !serving {
            builder.worker_threads(1);
        }
        Some(
            builder
                .enable_all()
                .build()
                .context("building the tokio runtime")?,
        )
    } else {
        None
    };
    let telemetry = telemetry::init(runtime.as_ref().map(|r| r.handle()));
    let result = match (cli.command, &runtime) {
        (None, Some(rt)) => serve(cli.serve, rt),
        (Some(Command::Serve(args)), Some(rt)) => serve(args, rt),
        (Some(Command::List(args)), _) => list(args),
        (Some(Command::Process(args)), _) => run_process(args),
        (_, None) => unreachable!("serving always builds a runtime"),
    };
    // Flush spans while the exporter's runtime still runs.
    telemetry.shutdown();
    result
}

fn serve(args: ServeArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let tls = args
        .tls()
        .context("cannot read the TLS certificate, key or client CA")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        // The one stdout line: the control plane reads the port from it.
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {addr}")?;
            out.flush()?;
        }
        // Stopped together with the gRPC server by the same signal.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut metrics_task = None;
        if let Some(metrics_addr) = args.metrics_listen {
            let metrics_listener = metrics::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {metrics_addr}"))?;
            let bound = metrics_listener.local_addr()?;
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "metrics on {bound}")?;
                out.flush()?;
            }
            tracing::info!(addr = %bound, "metrics serving at /metrics");
            let mut rx = stop_rx.clone();
            metrics_task = Some(tokio::spawn(metrics::serve(metrics_listener, async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })));
        }
        tracing::info!(
            %addr,
            threads = config::worker_threads(),
            tls = tls.is_some(),
            mutual_tls = tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            allowed_roots = ?sandbox::allowed_roots(),
            allowed_buckets = ?sandbox::allowed_buckets(),
            "engine serving"
        );
        server::run_with(listener, tls, async move {
            server::shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await?;
        // Calls whose client went away are over for tonic, but their
        // threads may still be removing temporary outputs.
        let still = tokio::task::spawn_blocking(|| producers::wait_idle(PRODUCERS_GRACE))
            .await
            .unwrap_or(0);
        if still > 0 {
            tracing::warn!(
                calls = still,
                "stopping with calls still winding down; temporary outputs may remain"
            );
        }
        if let Some(task) = metrics_task {
            if let Ok(Err(e)) = task.await {
                tracing::warn!(error = %e, "metrics server failed");
            }
        }
        drop(stop_rx);
        tracing::info!("engine stopped");
        Ok(())
    })
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let filters = Arc::new(Filters::compile(&args.filters.to_spec())?);
    let cancel = Arc::new(AtomicBool::new(false));
    let rx = match Root::resolve(&args.source.to_string_lossy())? {
        Root::Local(dir) => walk::start(dir, filters, false, cancel),
        Root::S3(prefix) => s3_list::start(prefix, filters, cancel)?,
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let (mut files, mut errors) = (0u64, 0u64);
    for ev in rx.iter() {
        match ev {
            walk::WalkEvent::Files(batch) => {
                files += batch.len() as u64;
                if !args.count {
                    for e in batch {
                        out.write_all(std::ffi::OsStr::from_bytes(&e.rel).as_bytes())?;
                        out.write_all(b"\n")?;
                    }
                }
            }
            walk::WalkEvent::Error { rel, failure } => {
                errors += 1;
                tracing::warn!(path = %String::from_utf8_lossy(&rel), kind = failure.kind.as_str(), "{}", failure.message);
            }
            walk::WalkEvent::Done { .. } => {}
        }
    }
    if args.count {
        writeln!(out, "{files}")?;
    }
    out.flush()?;
    if errors > 0 {
        tracing::warn!(errors, "some paths could not be listed");
    }
    Ok(())
}

/// Collects the summary, and why the source failed as a whole (a missing
/// source, say) if it did; everything else is dropped (or logged).
#[derive(Default)]
struct SummarySink {
    summary: Mutex<Option<pb::Summary>>,
    failure: Mutex<Option<pb::FileError>>,
}

impl Sink for SummarySink {
    fn send(&self, msg: pb::ProcessResponse) -> bool {
        match msg.event {
            Some(Event::Summary(s)) => {
                *self.summary.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
            }
            Some(Event::ItemDone(pb::WorkItemDone { error: Some(e), .. })) => {
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
            _ => {}
        }
        true
    }
}

fn run_process(args: ProcessArgs) -> anyhow::Result<()> {
    let mut options = serde_json::Map::new();
    for kv in &args.options {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--option {kv:?} must be key=value");
        };
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
        options.insert(k.to_owned(), value);
    }
    let start = pb::ProcessStart {
        task: args.task.clone(),
        options_json: serde_json::Value::Object(options).to_string(),
        results_dir: args
            .results_dir
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        destination: args
            .destination
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Default::default()
    };
    let config = ProcessConfig::from_start(&start)?;
    let spec = args.filters.to_spec();
    let filters = pb::Filters {
        include: spec.include,
        exclude: spec.exclude,
        extensions: spec.extensions,
        min_size: spec.min_size,
        max_size: spec.max_size,
        include_hidden: spec.include_hidden,
        follow_symlinks: spec.follow_symlinks,
        max_depth: (spec.max_depth > 0).then_some(spec.max_depth),
        ..Default::default()
    };
    let (items_tx, items_rx) = crossbeam_channel::unbounded();
    items_tx.send(pb::WorkItem {
        id: "source".into(),
        target: Some(pb::work_item::Target::Source(pb::SourceSpec {
            source: args.source.to_string_lossy().into_owned(),
            filters: Some(filters),
        })),
    })?;
    drop(items_tx);
    let sink = Arc::new(SummarySink::default());
    let span = tracing::info_span!(
        "process",
        pravah.task = %args.task,
        pravah.files = tracing::field::Empty,
        pravah.files_failed = tracing::field::Empty,
        pravah.bytes = tracing::field::Empty,
    );
    let _entered = span.enter();
    process::run(
        config,
        items_rx,
        sink.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    // A source that could not be processed at all is an error, not an
    // empty summary with exit status 0.
    if let Some(failure) = sink
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        bail!("{}", failure.message);
    }
    let summary = sink
        .summary
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("no summary produced")?;
    let mut value: serde_json::Value = serde_json::from_str(&summary.summary_json)?;
    if let Some(t) = &summary.totals {
        value["elapsed_ms"] = t.elapsed_ms.into();
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
