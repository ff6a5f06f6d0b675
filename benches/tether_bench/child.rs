//! tether as a child process, the way it is deployed: its own runtime,
//! threads, memory and CPU time (and the bare hyper proxy of `floor`, the
//! same way). Start, RSS, CPU time, `/metrics`,
//! `/debug/sessions`, and a graceful stop (SIGTERM also on drop).

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tether::emulator::WsMode;

use crate::common::{self, HttpClient};

/// A running tether.
pub struct Child {
    proc: std::process::Child,
    /// Its process id.
    pub pid: u32,
    /// `host:port` it listens on.
    pub addr: String,
    /// Where its stderr (logs at `warn`) goes.
    pub log: PathBuf,
}

/// Prometheus samples summed over their labels, by metric name (and the text).
#[derive(Debug, Default, Clone)]
pub struct Metrics(HashMap<String, f64>, String);

impl Metrics {
    /// Parses the text exposition.
    pub fn parse(text: &str) -> Metrics {
        let mut out = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let name = name.split('{').next().unwrap_or(name);
            if let Ok(v) = value.parse::<f64>() {
                *out.entry(name.to_string()).or_insert(0.0) += v;
            }
        }
        Metrics(out, text.to_string())
    }

    /// The samples of `name` summed by the value of `label`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let key = format!("{label}=\"");
        for line in self.1.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Some(v) = series.split_once(&key).and_then(|(_, rest)| rest.split('"').next()) else {
                continue;
            };
            if let Ok(n) = value.parse::<f64>() {
                *out.entry(v.to_string()).or_insert(0.0) += n;
            }
        }
        out
    }

    /// The sum of every sample of `name`, if tether exports it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }
}

/// Children started by this process (names their files apart: `overhead`
/// runs two tethers and two emulators).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// `PID-N`: this process's id and the child's number.
fn next_tag() -> String {
    format!("{}-{}", std::process::id(), STARTED.fetch_add(1, Ordering::Relaxed))
}

/// The tether binary children run, when not the one next to this binary.
static TETHER: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Has [`Child::start`] run `bin` from now on (`None`: the `tether` next to
/// this binary again). `compare` switches binaries between runs.
pub fn use_tether(bin: Option<PathBuf>) {
    *TETHER.lock().unwrap_or_else(|e| e.into_inner()) = bin;
}

/// The `tether` binary next to this one (where `cargo build --bins` puts it).
pub fn sibling_tether() -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("tether"))
}

/// `chosen`, else the `tether` next to this binary; it must exist (`how`
/// says how to get one).
fn tether_binary(chosen: Option<PathBuf>, how: &str) -> anyhow::Result<PathBuf> {
    let bin = match chosen {
        Some(bin) => bin,
        None => sibling_tether()?,
    };
    anyhow::ensure!(bin.exists(), "{} not found ({how})", bin.display());
    Ok(bin)
}

impl Child {
    /// Starts `tether` (next to this binary, or the one [`use_tether`]
    /// named) in front of `upstream`, with `env` as configuration
    /// overrides, and waits for its address.
    pub fn start(upstream: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
        let chosen = TETHER.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let bin = tether_binary(chosen, "build it with `cargo build --bins`")?;
        let log = std::env::temp_dir().join(format!("tether-bench-tether-{}.log", next_tag()));
        let mut cmd = ends_with_this_process(&bin);
        cmd.args(["--listen", "127.0.0.1:0", "--upstream", upstream])
            .env("TETHER_LOG_LEVEL", "warn")
            .env("TETHER_UPSTREAM_API_KEY_ENV", "TETHER_BENCH_NO_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Child::spawn(cmd, log)
    }

    /// Starts this binary's bare hyper proxy (see `floor`) in front of
    /// `upstream` (a base URL; only its `http://host:port` is used).
    pub fn floor(upstream: &str) -> anyhow::Result<Child> {
        let origin = upstream.trim_end_matches("/v1");
        let log = std::env::temp_dir().join(format!("tether-bench-floor-{}.log", std::process::id()));
        let mut cmd = ends_with_this_process(std::env::current_exe()?);
        cmd.args(["floor-proxy", "--upstream", origin])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        Child::spawn(cmd, log)
    }

    /// Starts an emulator (`tether emulate`) on the zero cost profile,
    /// answering WebSocket upgrades as `ws` says: the upstream of the timing
    /// scenarios, a process of its own like a remote service. It is `bin`'s
    /// (`--emulator-bin`), else the `tether` next to this binary's, not the
    /// one [`use_tether`] named (both sides of `compare` meet the same
    /// upstream).
    pub fn emulator(ws: WsMode, bin: Option<&Path>) -> anyhow::Result<Child> {
        let bin = tether_binary(bin.map(Path::to_path_buf), "--emulator-bin, or `cargo build --bins`")?;
        let tag = next_tag();
        let log = std::env::temp_dir().join(format!("tether-bench-emulator-{tag}.log"));
        let mut cmd = ends_with_this_process(&bin);
        cmd.args(["emulate", "--listen", "127.0.0.1:0", "--profile", "zero"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        // The WebSocket mode has no flag: a config file says it (read at start).
        let config = std::env::temp_dir().join(format!("tether-bench-emulator-{tag}.toml"));
        let mode = match ws {
            WsMode::Enabled => None,
            WsMode::Refuse426 => Some("refuse426"),
            WsMode::Refuse404 => Some("refuse404"),
        };
        if let Some(mode) = mode {
            std::fs::write(&config, format!("ws = \"{mode}\"\n"))?;
            cmd.arg("--config").arg(&config);
        }
        let started = Child::spawn(cmd, log);
        let _ = std::fs::remove_file(&config);
        started
    }

    /// Its base URL, as an upstream (`http://ADDR/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Spawns `cmd` and reads the `listening on ADDR` line it prints first.
    fn spawn(mut cmd: Command, log: PathBuf) -> anyhow::Result<Child> {
        let mut proc = cmd.spawn()?;
        let pid = proc.id();
        let mut line = String::new();
        std::io::BufReader::new(proc.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?)
            .read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("{cmd:?} did not start: {line:?} (see {})", log.display()))?
            .to_string();
        Ok(Child { proc, pid, addr, log })
    }

    /// Its `/v1/responses` URL.
    pub fn responses_url(&self) -> String {
        format!("http://{}/v1/responses", self.addr)
    }

    /// Its address as a socket address.
    pub fn socket_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.addr.parse()?)
    }

    /// CPU time (user + system) it has used so far, in microseconds.
    pub fn cpu_us(&self) -> f64 {
        usage(self.pid).cpu_us
    }

    /// Resident memory now, in MB.
    pub fn rss_mb(&self) -> f64 {
        common::rss_mb(self.pid).0
    }

    /// A GET, tried twice: scrapes come every 10 s, as long as tether's
    /// `header_read_timeout`, so the keep-alive connection may be closing
    /// just as the next scrape goes out (the usual keep-alive race).
    async fn get(&self, client: &HttpClient, path: &str) -> anyhow::Result<Bytes> {
        match self.get_once(client, path).await {
            Ok(body) => Ok(body),
            Err(_) => self.get_once(client, path).await,
        }
    }

    async fn get_once(&self, client: &HttpClient, path: &str) -> anyhow::Result<Bytes> {
        let req = http::Request::get(format!("http://{}{path}", self.addr)).body(Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await??;
        anyhow::ensure!(resp.status() == 200, "{path}: {}", resp.status());
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    /// tether's `/metrics`.
    pub async fn metrics(&self, client: &HttpClient) -> anyhow::Result<Metrics> {
        let body = self.get(client, "/metrics").await?;
        Ok(Metrics::parse(&String::from_utf8_lossy(&body)))
    }

    /// Sessions tether has created: ids are issued from 1 in order, so the
    /// highest live id (the newest sessions are live) counts them.
    pub async fn sessions_created(&self, client: &HttpClient) -> anyhow::Result<Option<u64>> {
        let body = self.get(client, "/debug/sessions").await?;
        let doc: Value = serde_json::from_slice(&body)?;
        Ok(doc["sessions"].as_array().and_then(|s| s.iter().filter_map(|s| s["id"].as_u64()).max()))
    }

    /// SIGTERM, then its exit code (killed after 20 s; `None` if it had to be).
    pub async fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.proc.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.proc.kill();
        let _ = self.proc.wait();
        None
    }
}

/// How long a child has to exit after SIGTERM before it is killed (tether
/// drains open requests for up to its `shutdown_grace`; the bench has
/// nothing left to wait for).
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while let Ok(None) = self.proc.try_wait() {
                if std::time::Instant::now() >= deadline {
                    let _ = self.proc.kill();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = self.proc.wait();
        }
    }
}

/// What a process and its direct children (nginx's worker) have used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU time, user + system, in microseconds: the sum over live threads
    /// of their time on a CPU (nanosecond resolution; a thread that exits
    /// takes its time with it: tether's and nginx's live as long as they
    /// do), else the process's ticks (10 ms resolution).
    pub cpu_us: f64,
    /// Context switches of all their threads, voluntary or not.
    pub switches: u64,
}

impl Usage {
    /// Per unit of `n` since `before`: (CPU µs, context switches to one decimal).
    pub fn per(self, before: Usage, n: usize) -> (f64, f64) {
        let n = n.max(1) as f64;
        let switches = (self.switches - before.switches) as f64 / n;
        ((self.cpu_us - before.cpu_us) / n, (switches * 10.0).round() / 10.0)
    }
}

/// [`Usage`] of `pid` and its direct children, from `/proc`.
pub fn usage(pid: u32) -> Usage {
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    usage_of(pids)
}

/// [`Usage`] of this process alone (the load generator and the emulator),
/// not of the children it started.
pub fn own_usage() -> Usage {
    usage_of(vec![std::process::id()])
}

fn usage_of(pids: Vec<u32>) -> Usage {
    let hz = clock_ticks_per_second();
    let mut u = Usage::default();
    for p in pids {
        // Per thread: time on a CPU in nanoseconds (schedstat), and context
        // switches (status). Where schedstat is missing, the process's
        // user + system ticks (10 ms each) instead.
        let (mut ns, mut threads_timed) = (0.0, true);
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
                match read("schedstat").split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
                    Some(t) => ns += t,
                    None => threads_timed = false,
                }
                u.switches += read("status")
                    .lines()
                    .filter(|l| {
                        l.starts_with("voluntary_ctxt_switches")
                            || l.starts_with("nonvoluntary_ctxt_switches")
                    })
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        if threads_timed && ns > 0.0 {
            u.cpu_us += ns / 1e3;
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(") ").map_or("", |x| x.1);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        u.cpu_us += (ticks(11) + ticks(12)) * 1e6 / hz;
    }
    u
}

/// USER_HZ (`getconf CLK_TCK`, asked once): 100 on every Linux this runs on.
fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A command for `program` whose process is sent SIGTERM when this one
/// dies, however it dies (a SIGKILL of the bench runs no destructor), so no
/// tether, floor proxy or nginx is left behind listening: it runs under
/// util-linux's `setpriv --pdeathsig TERM` (which sets the signal and execs
/// it in place) when that is installed, and plainly otherwise. Linux ties
/// the signal to the spawning thread: spawn from a thread that lives as long
/// as the child (the main thread and the runtime's workers do).
pub fn ends_with_this_process(program: impl AsRef<std::ffi::OsStr>) -> Command {
    static SETPRIV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "TERM", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "TERM", "--"]).arg(program);
    cmd
}
