//! Logging setup (tracing-subscriber).
//!
//! Logs go to stderr; stdout is reserved for the one `listening on ADDR` line
//! and for subcommands' reports. `RUST_LOG` wins over `[log] level`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Third-party targets that dump wire data (request headers with API keys,
/// frames with conversation content) at debug/trace. They are capped at
/// `info` whatever `RUST_LOG` says: keys and content never reach the log
/// through them. tether's own content logging is `log.content`.
const WIRE_LOGGERS: [&str; 6] = ["tungstenite", "tokio_tungstenite", "h2", "hyper", "hyper_util", "rustls"];

/// The filter: `RUST_LOG`, else `level`, with the wire loggers capped.
pub fn filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for target in WIRE_LOGGERS {
        if let Ok(d) = format!("{target}=info").parse::<Directive>() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

use crate::config::{LogConfig, LogFormat};

/// Keeps the log writer's thread alive; dropping it flushes what is queued.
/// Hold it for as long as the process logs (in `main`).
#[must_use = "dropping the guard stops logging"]
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), so tests and subcommands can call it freely.
///
/// Lines are formatted where they are logged but written to stderr by a
/// thread of their own: a turn never waits for a slow log sink (a full pipe,
/// a busy journald). If that thread falls behind by more than its queue
/// (8,192 lines), lines are dropped rather than requests slowed.
pub fn init(log: &LogConfig) -> LogGuard {
    let filter = filter(&log.level);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // The queue is allocated whole up front: 8,192 lines (~260 KB) rides
        // out a sink stalled for seconds at thousands of turns a second; the
        // crate's default (128,000) would hold ~4 MB from the start.
        .buffered_lines_limit(8_192)
        .lossy(true)
        .thread_name("tether-log")
        .finish(std::io::stderr());
    // A log sink that fails (disk full, closed pipe) must not fail requests:
    // by default tracing-subscriber reports a failed write with `eprintln!`,
    // which panics when stderr itself is the sink that failed.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).log_internal_errors(false);
    let installed = match log.format {
        LogFormat::Plain => builder.with_target(false).try_init(),
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
        }
    };
    LogGuard { _worker: installed.is_ok().then_some(guard) }
}
