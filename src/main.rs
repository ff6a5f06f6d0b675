//! The `tether` binary: CLI -> config -> telemetry -> serve; exit codes.
//!
//! Exit codes: 0 success, 64 bad configuration or usage, 69 cannot bind,
//! 1 anything else.

use std::process::ExitCode;

use clap::Parser;
use tether::cli::{Cli, Command};
use tether::config::{self, Config};

const EXIT_CONFIG: u8 = 64;
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match load(&cli.global) {
            Ok(config) => run_serve(config),
            Err(code) => code,
        },
        Command::CheckConfig { path } => check_config(path, &cli.global),
        Command::Demo { tool_calls, profile } => {
            let opts = tether::demo::DemoOptions { tool_calls, profile };
            report(runtime().block_on(async move { tether::demo::run(&opts, &mut std::io::stdout()).await }))
        }
        Command::Tail { url } => {
            report(runtime().block_on(async move { tether::tail::run(&url, &mut std::io::stdout()).await }))
        }
        Command::Emulate { profile } => {
            let _logs = tether::telemetry::init(&config::Config::default().log);
            let global = cli.global.clone();
            report(runtime().block_on(async move { run_emulator(&global, &profile).await }))
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run_emulator(global: &tether::cli::GlobalArgs, profile: &str) -> anyhow::Result<()> {
    use tether::emulator::{self, EmulatorConfig};
    let mut config = match &global.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            EmulatorConfig::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => EmulatorConfig::default(),
    };
    if global.config.is_none() || profile != "zero" {
        config.cost = emulator::profile(profile)
            .ok_or_else(|| anyhow::anyhow!("unknown profile {profile:?} (zero, illustrative)"))?;
    }
    config.listen = match &global.listen {
        Some(addr) => {
            addr.parse().map_err(|_| anyhow::anyhow!("--listen: expected IP:PORT, got {addr:?}"))?
        }
        None => ([127, 0, 0, 1], 0).into(),
    };
    let stop = tether::shutdown::signal();
    let (addr, handle) = emulator::spawn(config).await?;
    println!("listening on {addr}");
    stop.await;
    handle.shutdown();
    Ok(())
}

/// Loads the configuration or reports every bad field (exit 64).
fn load(global: &tether::cli::GlobalArgs) -> Result<Config, ExitCode> {
    config::load(global.config.as_deref(), std::env::vars(), &global.overrides()).map_err(|e| {
        eprintln!("tether: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    runtime_with(0)
}

/// A runtime with `threads` workers: 0 = one per core, 1 = one thread in all.
fn runtime_with(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build().unwrap_or_else(|e| {
        eprintln!("tether: cannot start the async runtime: {e}");
        std::process::exit(1)
    })
}

fn run_serve(config: Config) -> ExitCode {
    let _logs = tether::telemetry::init(&config.log);
    runtime_with(config.server.worker_threads).block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tether: cannot listen on {}: {e}", config.server.listen);
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        };
        let addr = listener.local_addr().unwrap_or(config.server.listen);
        // Handlers first: a script may send SIGTERM right after reading the address.
        let stop = tether::shutdown::signal();
        println!("listening on {addr}");
        tracing::info!(%addr, upstream = %config.upstream.base_url, "tether listening");
        tether::serve(config, listener, stop).await;
        ExitCode::SUCCESS
    })
}

fn check_config(path: Option<std::path::PathBuf>, global: &tether::cli::GlobalArgs) -> ExitCode {
    let path = path.or_else(|| global.config.clone());
    match config::load(path.as_deref(), std::env::vars(), &global.overrides()) {
        Ok(c) => {
            let from = path.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
            println!("configuration OK ({from})");
            println!("  listen      {}", c.server.listen);
            println!("  upstream    {}", c.upstream.base_url);
            println!("  websocket   {}", c.upstream.ws_url);
            println!("  api key env {}", c.upstream.api_key_env);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
