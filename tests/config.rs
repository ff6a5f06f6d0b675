//! Configuration: the documented file equals the defaults, overrides apply in
//! order, every bad field is named, and the binary exits 64 on bad config.

mod common;

use std::process::Command;

use tether::config::{self, Config, ConfigError, Overrides};

fn repo_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn documented_config_toml_equals_the_defaults() {
    let text = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    assert_eq!(config::from_toml_str(&text).unwrap(), Config::default());
    assert_eq!(config::from_toml_str("").unwrap(), Config::default());
}

#[test]
fn every_key_in_the_file_has_a_comment() {
    let text = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(i > 0 && lines[i - 1].starts_with('#'), "key without a comment: {line}");
        }
    }
}

#[test]
fn ws_url_is_derived_from_base_url() {
    let c = config::from_toml_str("[upstream]\nbase_url = \"http://127.0.0.1:9000/v1/\"").unwrap();
    assert_eq!(c.upstream.base_url, "http://127.0.0.1:9000/v1");
    assert_eq!(c.upstream.ws_url, "ws://127.0.0.1:9000/v1/responses");
    assert_eq!(Config::default().upstream.ws_url, "wss://api.openai.com/v1/responses");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = std::env::temp_dir().join(format!("tether-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1111\"\n[pool]\nper_tenant = 3\n").unwrap();
    let env = vec![
        ("TETHER_SERVER_LISTEN".to_string(), "127.0.0.1:2222".to_string()),
        ("TETHER_POOL_MAX_AGE".to_string(), "10m".to_string()),
        ("TETHER_LOG_CONTENT".to_string(), "true".to_string()),
        ("PATH".to_string(), "/ignored".to_string()),
    ];
    let c = config::load(Some(&path), env.clone(), &Overrides::default()).unwrap();
    assert_eq!(c.server.listen.port(), 2222);
    assert_eq!(c.pool.per_tenant, 3);
    assert_eq!(c.pool.max_age, std::time::Duration::from_secs(600));
    assert!(c.log.content);
    let flags = Overrides { listen: Some("127.0.0.1:3333".into()), ..Default::default() };
    assert_eq!(config::load(Some(&path), env, &flags).unwrap().server.listen.port(), 3333);
}

#[test]
fn every_bad_field_is_named_at_once() {
    let text = r#"
[server]
listen = "nowhere"
max_body_bytes = 0
shutdown_grace = "soon"
keepalive_timeout = "0s"
colour = "blue"
[upstream]
base_url = "ftp://x"
fallback_http = "maybe"
[pool]
ping_interval = "30s"
pong_timeout = "10s"
[logs]
level = "info"
"#;
    let env = vec![
        ("TETHER_SESSIONS_MAX".to_string(), "-1".to_string()),
        ("TETHER_NOPE_X".to_string(), "1".to_string()),
    ];
    let dir = std::env::temp_dir().join(format!("tether-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let Err(ConfigError::Invalid(errors)) = config::load(Some(&path), env, &Overrides::default()) else {
        panic!("expected field errors");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "server.listen",
        "server.max_body_bytes",
        "server.shutdown_grace",
        "server.keepalive_timeout",
        "server.colour",
        "upstream.base_url",
        "upstream.fallback_http",
        "pool.pong_timeout",
        "logs",
        "TETHER_SESSIONS_MAX",
        "TETHER_NOPE_X",
    ] {
        assert!(fields.contains(&f), "{f} not reported in {fields:?}");
    }
    assert_eq!(errors.len(), 11, "{errors:?}");
}

#[test]
fn toml_syntax_errors_name_the_file() {
    let err = config::from_toml_str("[server\nlisten=").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
}

#[test]
fn non_loopback_listen_needs_allow_remote() {
    let err = config::from_toml_str("[server]\nlisten = \"0.0.0.0:8787\"").unwrap_err().to_string();
    assert!(err.contains("server.listen") && err.contains("allow_remote"), "{err}");
    let ok = config::from_toml_str("[server]\nlisten = \"0.0.0.0:8787\"\nallow_remote = true").unwrap();
    assert!(ok.server.allow_remote);
}

fn tether(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env_remove("TETHER_CONFIG")
        .output()
        .expect("run tether")
}

#[test]
fn binary_exits_64_and_names_each_bad_field() {
    let dir = std::env::temp_dir().join(format!("tether-config-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"x\"\nfoo = 1\n[log]\nformat = \"xml\"\n").unwrap();
    let p = path.to_str().unwrap();
    for args in [vec!["check-config", p], vec!["serve", "--config", p]] {
        let out = tether(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for f in ["server.listen", "server.foo", "log.format"] {
            assert!(err.contains(f), "{f} missing from: {err}");
        }
    }
}

#[test]
fn binary_refuses_remote_bind_without_opt_in() {
    let out = tether(&["--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_remote"));
}

#[test]
fn check_config_accepts_the_repo_file() {
    let out = tether(&["check-config", repo_file("config.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn binary_prints_the_bound_address_for_port_zero() {
    let (mut child, addr) =
        spawn_listening(&["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9/v1"], &[]);
    assert_ne!(addr.port(), 0);
    assert!(std::net::TcpStream::connect(addr).is_ok());
    // SIGTERM: a graceful stop with exit code 0.
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

#[test]
fn worker_threads_reads_from_env_and_refuses_a_negative() {
    let env = vec![("TETHER_SERVER_WORKER_THREADS".to_string(), "1".to_string())];
    let c = config::load(None, env, &Overrides::default()).unwrap();
    assert_eq!(c.server.worker_threads, 1);
    let env = vec![("TETHER_SERVER_WORKER_THREADS".to_string(), "-2".to_string())];
    let Err(ConfigError::Invalid(errors)) = config::load(None, env, &Overrides::default()) else {
        panic!("expected a field error");
    };
    assert_eq!(errors[0].field, "TETHER_SERVER_WORKER_THREADS", "{errors:?}");
}

/// Spawns `tether` with `args` and `env`, stderr discarded.
fn spawn_listening(args: &[&str], env: &[(&str, &str)]) -> (common::Running, std::net::SocketAddr) {
    common::spawn_binary(args, env, std::process::Stdio::null())
}

/// With `server.worker_threads = 1` (a single-threaded runtime) the binary
/// serves managed turns end to end: a fresh turn, then its continuation.
#[test]
fn one_worker_thread_serves_managed_turns() {
    use std::io::{Read, Write};
    let (_emu, emu_addr) = spawn_listening(&["emulate", "--listen", "127.0.0.1:0"], &[]);
    let upstream = format!("http://{emu_addr}/v1");
    let (_proxy, addr) = spawn_listening(
        &["--listen", "127.0.0.1:0", "--upstream", &upstream],
        &[("TETHER_SERVER_WORKER_THREADS", "1"), ("TETHER_UPSTREAM_API_KEY_ENV", "TETHER_TEST_NO_KEY")],
    );
    let post = |body: &serde_json::Value| -> (String, serde_json::Value) {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /v1/responses HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
             authorization: Bearer sk-test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, json) = out.split_once("\r\n\r\n").expect(&out);
        (head.to_ascii_lowercase(), serde_json::from_str(json).expect(json))
    };
    let script = serde_json::json!({"emulator_script": "tools=0,answer=20"});
    let mut input = vec![serde_json::json!({"role": "user", "content": "hi"})];
    let first = serde_json::json!({"model": "m", "input": input, "metadata": script});
    let (head, resp) = post(&first);
    assert!(head.starts_with("http/1.1 200") && head.contains("x-tether-route: fresh"), "{head}");
    assert_eq!(resp["status"], "completed");
    input.extend(resp["output"].as_array().unwrap().iter().cloned());
    input.push(serde_json::json!({"role": "user", "content": "more"}));
    let (head, resp) = post(&serde_json::json!({"model": "m", "input": input, "metadata": script}));
    assert!(head.contains("x-tether-route: continue"), "{head}");
    assert_eq!(resp["status"], "completed");
}
