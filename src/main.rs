//! The `meshmetrics` command line.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use meshmetrics::config::watch::ConfigWatcher;
use meshmetrics::config::ComponentSection;
use meshmetrics::service::components::{
    ExporterConfig, ExtensionConfig, ProcessorConfig, ReceiverConfig,
};
use meshmetrics::service::{Config, Running};

/// jemalloc keeps objects of each size class in pages of their own, so memory freed in bulk
/// (a gone target's scrape cache, a query's answer) leaves whole pages free instead of holes
/// between the store's long-lived series, and hands them back to the system. With glibc's
/// malloc the façade benchmark's window took 140–151 MiB, with jemalloc 121–126 MiB; the whole
/// job's steady memory went from about 200 to 164 MiB (`docs/memory.md`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread returns pages unused for a
/// second, even while the agent is idle (by default pages go back only as later allocations
/// come, after ten seconds). One arena: by default jemalloc makes four per CPU of the node,
/// not of the container, and each keeps its own free pages and partly used ones (the
/// façade benchmark's window took 1–3 MiB less, and 10 MiB less after its queries).
/// `_RJEM_MALLOC_CONF` in the environment overrides any of them.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &u8 =
    &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1\0"[0];

/// Hands a worker's cached allocations back to jemalloc when it goes idle, at most once a
/// second per thread (a busy worker keeps its cache). jemalloc trims a thread's cache as that
/// thread allocates, so an idle worker would sit on its cache for as long as it is idle.
/// Whether it flushed.
#[cfg(feature = "jemalloc")]
fn flush_idle_thread_cache() -> bool {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local!(static FLUSHED: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if FLUSHED
        .get()
        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
    {
        return false;
    }
    FLUSHED.set(Some(now));
    // SAFETY: `thread.tcache.flush` reads and writes nothing through its pointers (all null,
    // lengths 0); it flushes the calling thread's cache.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

#[derive(Parser)]
#[command(
    name = "meshmetrics",
    version,
    about = "Metrics agent for Flagger + Istio canaries: scrape, process, export OTLP"
)]
struct Cli {
    /// Config file; without it the embedded default config runs. Repeatable: later files
    /// merge into earlier ones as in the collector (maps merged, lists replaced).
    #[arg(long, global = true)]
    config: Vec<String>,
    /// A value set over the config files: `--set=processors::batch::timeout=2s`.
    #[arg(long, global = true)]
    set: Vec<String>,
    /// Collector feature gates (`+id`, `-id` or `id`, comma-separated): known ones are
    /// listed on featurez, unknown ones are ignored with a warning.
    #[arg(long, global = true, value_delimiter = ',')]
    feature_gates: Vec<String>,
    /// Threads running the pipelines [default: half the CPUs the process may use, at
    /// least 1]. The query façade's appends and query evaluation use threads of their own.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file and list every problem found (exit 1 if any).
    Validate {
        /// Also print the effective config (files merged, `--set` applied, references
        /// expanded, secrets redacted).
        #[arg(long)]
        print: bool,
    },
    /// List the component types this build supports.
    Components,
    /// Print the JSON Schema of the config file (for yaml-language-server and other
    /// editors), or the configuration reference generated from it.
    Schema {
        /// `json` (the schema) or `markdown` (docs/configuration.md).
        #[arg(long, default_value = "json", value_parser = ["json", "markdown"])]
        format: String,
    },
    /// Flagger canaries: what their analysis would conclude now, and why.
    Canary {
        #[command(subcommand)]
        action: CanaryCommand,
    },
}

#[derive(Subcommand)]
enum CanaryCommand {
    /// Render each metric of each Canary's analysis as Flagger does, ask its provider, and
    /// print the value, the threshold, the verdict and the answer's warnings (exit 1 if any
    /// check would fail).
    Check {
        /// Manifests: a file, a directory, or `-` (e.g. `kubectl kustomize … |`); repeatable.
        /// Without it, the cluster's objects through the Kubernetes API (kubeconfig or
        /// in-cluster).
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// From the cluster: only the Canaries of this namespace (default: all).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Ask every query of this Prometheus-compatible address (needed for the builtin
        /// checks and inline queries, which Flagger asks of its -metrics-server).
        #[arg(long)]
        address: Option<String>,
        /// A file whose first line is a bearer token for every query, instead of the
        /// templates' Secrets.
        #[arg(long)]
        token_file: Option<String>,
        /// Only the Canary of this name.
        #[arg(long)]
        canary: Option<String>,
        /// `text` or `json`.
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

/// Where the config comes from: its files and `--set` values.
#[derive(Clone)]
struct Sources {
    files: Vec<String>,
    sets: Vec<String>,
}

impl Sources {
    fn load(&self) -> Result<Config, String> {
        Config::from_layers(&self.files, &self.sets).map_err(|e| e.to_string())
    }

    fn name(&self) -> String {
        match self.files.as_slice() {
            [] => "<default>".into(),
            files => files.join(" + "),
        }
    }
}

fn init_logging(cfg: &Config) {
    let logs = &cfg.raw.service.telemetry.logs;
    meshmetrics::logging::init(&logs.level, &logs.encoding);
}

fn components() {
    fn section<C: ComponentSection>(title: &str) {
        println!("{title}:");
        for s in C::SUPPORTED {
            println!("  - {s}");
        }
    }
    section::<ReceiverConfig>("receivers");
    section::<ProcessorConfig>("processors");
    section::<ExporterConfig>("exporters");
    section::<ExtensionConfig>("extensions");
}

/// Resolves when the watched config file changes; never when running on the embedded config.
async fn config_changed(watcher: &mut Option<ConfigWatcher>) {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn run(sources: Sources, cfg: Config) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut running = Running::start(Arc::new(cfg)).await?;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(
        "meshmetrics {} is running (worker threads: {workers})",
        env!("CARGO_PKG_VERSION")
    );
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    // Edits to the config file (a ConfigMap update included) reload like SIGHUP does.
    let mut watcher = (!sources.files.is_empty())
        .then(|| ConfigWatcher::new(sources.files.clone(), Duration::from_secs(1)));
    loop {
        let why = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => "SIGHUP",
            _ = config_changed(&mut watcher) => "config file changed",
        };
        // Validate first; an invalid edit leaves the running pipelines alone.
        match sources.load() {
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "config reload refused; keeping the running config");
                running.reload_refused(&e);
            }
            Ok(new) => {
                // What would fail to start (a port taken) is found before anything stops.
                if let Err(e) = running.preflight(&new) {
                    tracing::error!(trigger = why, error = %e, "config reload refused; keeping the running config");
                    running.reload_refused(&e);
                    continue;
                }
                tracing::info!(
                    trigger = why,
                    "reloading config: restarting only what changed"
                );
                let previous = running.config();
                running = match running.reload(Arc::new(new)).await {
                    Ok(r) => {
                        tracing::info!("config reloaded");
                        r
                    }
                    // Anything else that failed to start: the previous config again, whole.
                    Err(e) => {
                        tracing::error!(error = %e, "the new config failed to start; starting the previous one again");
                        let r = Running::start(previous).await?;
                        r.reload_refused(&format!("the new config failed to start: {e}"));
                        r
                    }
                };
            }
        }
    }
    tracing::info!("shutting down: stopping scrapes, flushing batches");
    running.shutdown(Duration::from_secs(20)).await;
    Ok(())
}

/// Stack of every runtime thread (workers and the blocking pool, where queries are parsed and
/// evaluated). Parsing, evaluating and dropping a query recurse once per level of nesting,
/// which `promql::bounds` caps at 256 levels; an unoptimised build takes up to ~20 KiB a
/// level, more than tokio's 2 MiB default holds. Only the pages touched become resident.
const QUERY_STACK_BYTES: usize = 16 << 20;

/// The default number of runtime worker threads. A scrape's samples go from its loop to the
/// batch and the exporter: kept on one thread, they stay in one core's caches, and on two
/// threads each hand-off is a wake-up and a transfer between cores. Measured at 100 sidecars
/// × 2,224 series every 5 s, one worker instead of two cut the CPU per sample by 6-15 % and
/// kept the ceiling (1.52 vs 1.57 M samples/s) on 2 cores; the other half of the CPUs is left
/// to the workloads an agent shares its node with.
fn default_worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = Sources {
        files: cli.config.clone(),
        sets: cli.set.clone(),
    };
    match cli.command {
        Some(Command::Components) => {
            components();
            ExitCode::SUCCESS
        }
        Some(Command::Schema { format }) => {
            let schema = meshmetrics::service::schema::json_schema();
            if format == "markdown" {
                print!("{}", meshmetrics::service::schema::markdown(&schema));
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&schema).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Some(Command::Canary {
            action:
                CanaryCommand::Check {
                    files,
                    namespace,
                    address,
                    token_file,
                    canary,
                    output,
                },
        }) => {
            let opts = meshmetrics::canary::CheckOptions {
                files,
                namespace,
                address,
                token_file,
                canary,
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(opts.run()) {
                Ok(reports) => {
                    if output == "json" {
                        let doc = serde_json::json!({ "canaries": reports });
                        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                    } else {
                        print!("{}", meshmetrics::canary::render_text(&reports));
                    }
                    if reports.iter().all(|r| r.passed()) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Validate { print }) => match sources.load() {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                for w in meshmetrics::features::requested(&cli.feature_gates) {
                    eprintln!("warning: {w}");
                }
                if print {
                    match meshmetrics::config::layers::effective(&sources.files, &sources.sets) {
                        Ok(doc) => {
                            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
                        }
                        Err(e) => {
                            eprintln!("{e}");
                            return ExitCode::from(1);
                        }
                    }
                }
                println!("{}: valid", sources.name());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        None => {
            let cfg = match sources.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            init_logging(&cfg);
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            for w in meshmetrics::features::requested(&cli.feature_gates) {
                tracing::warn!("{w}");
            }
            let workers = cli
                .worker_threads
                .map_or_else(default_worker_threads, usize::from);
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(workers)
                .thread_stack_size(QUERY_STACK_BYTES)
                .enable_all();
            #[cfg(feature = "jemalloc")]
            rt.on_thread_park(|| {
                flush_idle_thread_cache();
            });
            let rt = match rt.build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(run(sources, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "meshmetrics failed");
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    /// A thread's cache is flushed when it parks, but not again within the second; each
    /// thread keeps its own clock.
    #[test]
    fn an_idle_thread_cache_is_flushed_at_most_once_a_second() {
        assert!(
            super::flush_idle_thread_cache(),
            "jemalloc refused the flush"
        );
        assert!(!super::flush_idle_thread_cache());
        let other = std::thread::spawn(super::flush_idle_thread_cache);
        assert!(other.join().expect("thread"));
    }
}
