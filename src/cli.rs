//! The command line (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

const EXAMPLES: &str = "\
Examples:
  tether                                   serve on 127.0.0.1:8787 (built-in defaults)
  tether serve --config /etc/tether/config.toml
  tether --listen 127.0.0.1:0              pick a free port; prints `listening on ADDR`
  tether check-config config.toml          validate a file, name every bad field
  tether demo                              offline demo against the built-in emulator
  tether tail                              follow the decisions of a running tether
  tether emulate --listen 127.0.0.1:9000   run the upstream emulator alone

Point your client at it:  OPENAI_BASE_URL=http://127.0.0.1:8787/v1";

/// tether: makes stateless Responses API calls continue over long-lived
/// upstream WebSockets, sending only what is new.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// What to run (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Clone, Args, Default)]
pub struct GlobalArgs {
    /// Config file (default: $TETHER_CONFIG, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8787 (port 0 picks a free port).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Upstream API base URL, e.g. https://api.openai.com/v1.
    #[arg(long, global = true, value_name = "URL")]
    pub upstream: Option<String>,
    /// Log format: plain or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl GlobalArgs {
    /// The flags that override config keys.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate a config file (and TETHER_* env vars) and print the result.
    CheckConfig {
        /// The file to check (default: --config, $TETHER_CONFIG, or built-in defaults).
        path: Option<PathBuf>,
    },
    /// Offline demo: a scripted agent loop against the built-in emulator,
    /// directly and through tether, with a report of what tether saved.
    Demo {
        /// Tool calls in the loop (the loop makes one more model call than this).
        #[arg(long, default_value_t = 29)]
        tool_calls: usize,
        /// Emulator cost profile: illustrative or zero.
        #[arg(long, default_value = "illustrative")]
        profile: String,
    },
    /// Follow a running tether's decisions live (one line per turn).
    Tail {
        /// tether's address.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        url: String,
    },
    /// Run the upstream emulator alone (HTTP + WebSocket mode) for development.
    /// `--listen` sets its address (default 127.0.0.1:0), `--config` an emulator TOML file.
    Emulate {
        /// Cost profile: zero or illustrative.
        #[arg(long, default_value = "zero")]
        profile: String,
    },
}
