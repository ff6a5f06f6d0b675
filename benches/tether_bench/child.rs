//! tether as a child process, the way it is deployed: its own runtime, its
//! own threads, its own memory and CPU time (read from /proc).

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// A running `tether` binary; killed (SIGTERM, then waited) on drop.
pub struct Child {
    proc: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Child {
    /// Starts the `tether` binary next to this one, in front of `upstream`,
    /// with `TETHER_*` overrides in `env`.
    pub fn spawn(upstream: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
        let bin = std::env::current_exe()?.with_file_name("tether");
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build with `cargo build --release --bins`",
            bin.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.args(["--listen", "127.0.0.1:0", "--upstream", upstream])
            .env("TETHER_LOG_LEVEL", "warn")
            .env("TETHER_UPSTREAM_API_KEY_ENV", "TETHER_BENCH_NO_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = cmd.spawn()?;
        let mut line = String::new();
        let stdout = proc.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("tether printed {line:?} instead of its address"))?
            .parse()?;
        Ok(Child { proc, addr })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// CPU time (user + system) it has used so far, in microseconds.
    pub fn cpu_us(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after ") ".
        let rest = stat.rsplit_once(") ").map_or("", |x| x.1);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
        (ticks(11) + ticks(12)) * 1e6 / clock_ticks_per_second()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.proc.id().to_string()]).status();
        let _ = self.proc.wait();
    }
}

/// USER_HZ: 100 on every Linux this runs on (`getconf CLK_TCK`).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
