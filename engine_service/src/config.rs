//! Engine configuration: command line and environment (`PRAVAH_ENGINE_*`),
//! plus the process-wide worker thread count and limits every module reads.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Args, Parser, Subcommand};

/// Default entries per List batch or chunk file.
pub const DEFAULT_BATCH_FILES: u32 = 1000;
/// Most entries per List batch or chunk, and per Process result batch.
pub const MAX_BATCH_FILES: u32 = 10_000;
/// Files per Process result batch (and part file).
pub const PROCESS_BATCH_FILES: usize = 1000;
/// Bytes at which a Process batch closes, for tasks whose work grows with
/// file size: about a quarter second of gzip on one core, so a handful of
/// mid-size files still spread over every core.
pub const PROCESS_BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Most work items one Process call accepts.
pub const MAX_WORK_ITEMS: u32 = 100_000;
/// Default least time between two Progress messages.
pub const DEFAULT_PROGRESS_INTERVAL_MS: u32 = 250;

/// Threads for CPU work; 0 until configured, then fixed.
static WORKER_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads used for CPU work (the rayon pools' size).
pub fn worker_threads() -> usize {
    match WORKER_THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

/// Sizes the global rayon pool (processing) and the walk pool. Call once,
/// before any work; `None` or 0 means all cores.
pub fn init_threads(threads: Option<usize>) {
    let n = threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    WORKER_THREADS.store(n, Ordering::Relaxed);
    // Fails only if the global pool was already built; its size then stands.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("pravah-work-{i}"))
        .build_global();
}

#[derive(Debug, Parser)]
#[command(
    name = "pravah-engine",
    version,
    about = "Pravah engine: gRPC server and direct CLI"
)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Threads for CPU work (default: all cores).
    #[arg(long, env = "PRAVAH_ENGINE_THREADS", global = true)]
    pub threads: Option<usize>,
    /// Directory every source, chunk_dir and results_dir must lie in, after
    /// resolving symlinks (repeatable, or a comma list in the environment).
    /// None: every path is allowed.
    #[arg(
        long = "allowed-root",
        env = "PRAVAH_ALLOWED_ROOTS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_roots: Vec<PathBuf>,
    /// Bucket an `s3://` source or destination may name (repeatable, or a
    /// comma list in the environment). None: no bucket is allowed.
    #[arg(
        long = "allowed-bucket",
        env = "PRAVAH_ALLOWED_BUCKETS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_buckets: Vec<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "PRAVAH_ENGINE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless set; port
    /// 0 picks a free port, announced as `metrics on <addr>` after the
    /// `listening on` line).
    #[arg(long, env = "PRAVAH_ENGINE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "PRAVAH_ENGINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PRAVAH_ENGINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: accept only clients whose certificate this PEM CA signed.
    #[arg(long, env = "PRAVAH_ENGINE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServeArgs {
    /// The TLS files, read; `None` when serving plaintext.
    pub fn tls(&self) -> std::io::Result<Option<crate::server::TlsPem>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(crate::server::TlsPem {
            cert: std::fs::read(cert)?,
            key: std::fs::read(key)?,
            client_ca: self.tls_client_ca.as_ref().map(std::fs::read).transpose()?,
        }))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve(ServeArgs),
    /// List a directory or s3:// prefix in-process, printing relative paths.
    List(ListArgs),
    /// Run a task over a directory or s3:// prefix in-process, printing the summary JSON.
    Process(ProcessArgs),
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Glob of relative paths to include (repeatable).
    #[arg(long = "include")]
    pub include: Vec<String>,
    /// Glob of relative paths to exclude (repeatable; prunes directories).
    #[arg(long = "exclude")]
    pub exclude: Vec<String>,
    /// File extension to include, without dot (repeatable).
    #[arg(long = "ext")]
    pub ext: Vec<String>,
    #[arg(long)]
    pub min_size: Option<u64>,
    #[arg(long)]
    pub max_size: Option<u64>,
    /// Include hidden files and directories.
    #[arg(long)]
    pub hidden: bool,
    /// Follow symlinks that stay inside the source.
    #[arg(long)]
    pub follow_symlinks: bool,
    #[arg(long, default_value_t = 0)]
    pub max_depth: u32,
}

impl FilterArgs {
    pub fn to_spec(&self) -> crate::filters::FilterSpec {
        crate::filters::FilterSpec {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            extensions: self.ext.clone(),
            min_size: self.min_size,
            max_size: self.max_size,
            include_hidden: self.hidden,
            follow_symlinks: self.follow_symlinks,
            max_depth: self.max_depth,
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub source: PathBuf,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Print only the number of files.
    #[arg(long)]
    pub count: bool,
}

#[derive(Debug, Args)]
pub struct ProcessArgs {
    pub source: PathBuf,
    #[arg(long)]
    pub task: String,
    /// Task option as key=value; the value is JSON if it parses, else a string.
    #[arg(long = "option")]
    pub options: Vec<String>,
    /// Write per-file results as part files here.
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Where tasks that write files put their outputs.
    #[arg(long)]
    pub destination: Option<PathBuf>,
    #[command(flatten)]
    pub filters: FilterArgs,
}
