//! A reference reverse proxy: nginx on loopback in front of the emulator,
//! started and stopped by the benchmark when nginx is installed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    port: u16,
}

fn binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Nginx {
    /// `Ok(None)` when nginx is not installed.
    pub fn start(upstream_base: &str) -> anyhow::Result<Option<Nginx>> {
        let Some(bin) = binary() else { return Ok(None) };
        let upstream = upstream_base.trim_start_matches("http://").trim_end_matches("/v1");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::current_dir()?.join("target/bench-nginx");
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = format!(
            "worker_processes 1;\nerror_log logs/error.log warn;\npid logs/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path /tmp/bench-nginx-body;\n\
               proxy_temp_path /tmp/bench-nginx-proxy;\n  client_max_body_size 64m;\n\
               upstream emu {{ server {upstream}; keepalive 64; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://emu;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = crate::child::ends_with_this_process(bin)
            .args(["-p", &dir.display().to_string(), "-c", "nginx.conf", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let nginx = Nginx { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nginx did not start (see target/bench-nginx/logs)");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(nginx))
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The master's pid (its worker is its child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its worker too (a SIGKILL would
    /// leave the worker behind, listening); SIGKILL only after 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
