//! Loading and validating configuration from TOML, environment and flags.
//!
//! Every key is read through one typed getter that records the field's name,
//! so a bad file yields one error per bad field, all at once, and any key the
//! getters did not read is reported as unknown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, ENV_CONFIG_PATH, ENV_PREFIX, LogFormat};

/// One bad field: its dotted name (`server.listen`) or env var, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `section.key`, or the environment variable's name.
    pub field: String,
    /// What is wrong, and what is expected.
    pub message: String,
}

/// Why configuration could not be loaded. Every variant maps to exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The path read.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// One or more fields are bad or unknown.
    #[error("{}", display_fields(.0))]
    Invalid(Vec<FieldError>),
}

fn display_fields(errors: &[FieldError]) -> String {
    let mut out = format!("invalid configuration ({} problem(s)):", errors.len());
    for e in errors {
        out.push_str(&format!("\n  {}: {}", e.field, e.message));
    }
    out
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--upstream` (the base URL).
    pub upstream: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// Loads the config: file (`path`, else `$TETHER_CONFIG`, else built-in
/// defaults), then `TETHER_*` variables from `env`, then `overrides`.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    let path = path
        .map(Path::to_path_buf)
        .or_else(|| env.iter().find(|(k, _)| k == ENV_CONFIG_PATH).map(|(_, v)| PathBuf::from(v)));
    let (text, name) = match &path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
            (text, p.display().to_string())
        }
        None => (String::new(), "(defaults)".to_string()),
    };
    build(&text, &name, &env, overrides)
}

/// Parses a TOML document alone (no environment, no flags).
pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
    build(text, "(string)", &[], &Overrides::default())
}

fn build(
    text: &str,
    name: &str,
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
        path: name.to_string(),
        message: e.to_string().trim().to_string(),
    })?;
    let mut f = Fields::new(table, env, overrides);
    let config = read_all(&mut f);
    f.finish(&config)?;
    Ok(config)
}

/// Every known key, read once. Add a key here, in `Config`, and in `config.toml`.
fn read_all(f: &mut Fields) -> Config {
    let d = Config::default();
    let mut c = d.clone();
    c.server.listen = f.get("server", "listen", d.server.listen, parse_addr);
    c.server.allow_remote = f.get("server", "allow_remote", false, parse_bool);
    c.server.max_body_bytes = f.get("server", "max_body_bytes", d.server.max_body_bytes, positive);
    c.server.header_read_timeout =
        f.get("server", "header_read_timeout", d.server.header_read_timeout, positive_duration);
    c.server.keepalive_timeout =
        f.get("server", "keepalive_timeout", d.server.keepalive_timeout, positive_duration);
    c.server.body_read_timeout = f.get("server", "body_read_timeout", d.server.body_read_timeout, duration);
    c.server.max_header_bytes = f.get("server", "max_header_bytes", d.server.max_header_bytes, header_bytes);
    c.server.max_connections = f.get("server", "max_connections", d.server.max_connections, positive);
    c.server.request_timeout = f.get("server", "request_timeout", d.server.request_timeout, duration);
    c.server.shutdown_grace = f.get("server", "shutdown_grace", d.server.shutdown_grace, duration);
    c.server.debug_remote = f.get("server", "debug_remote", false, parse_bool);
    c.server.worker_threads = f.get("server", "worker_threads", d.server.worker_threads, non_negative);

    c.upstream.base_url = f.get("upstream", "base_url", d.upstream.base_url, http_url);
    c.upstream.ws_url = f.get("upstream", "ws_url", String::new(), ws_url_or_empty);
    c.upstream.api_key_env = f.get("upstream", "api_key_env", d.upstream.api_key_env, env_name);
    c.upstream.connect_timeout = f.get("upstream", "connect_timeout", d.upstream.connect_timeout, duration);
    c.upstream.fallback_http = f.get("upstream", "fallback_http", d.upstream.fallback_http, parse_bool);
    c.upstream.fallback_cooldown =
        f.get("upstream", "fallback_cooldown", d.upstream.fallback_cooldown, duration);
    c.upstream.beta_header = f.get("upstream", "beta_header", d.upstream.beta_header, parse_bool);

    c.pool.per_tenant = f.get("pool", "per_tenant", d.pool.per_tenant, positive);
    c.pool.total = f.get("pool", "total", d.pool.total, positive);
    c.pool.queue_timeout = f.get("pool", "queue_timeout", d.pool.queue_timeout, duration);
    c.pool.spares_per_tenant = f.get("pool", "spares_per_tenant", d.pool.spares_per_tenant, non_negative);
    c.pool.ping_interval = f.get("pool", "ping_interval", d.pool.ping_interval, duration);
    c.pool.pong_timeout = f.get("pool", "pong_timeout", d.pool.pong_timeout, duration);
    c.pool.idle_timeout = f.get("pool", "idle_timeout", d.pool.idle_timeout, duration);
    c.pool.max_age = f.get("pool", "max_age", d.pool.max_age, duration);
    c.pool.drain_timeout = f.get("pool", "drain_timeout", d.pool.drain_timeout, duration);

    c.sessions.max = f.get("sessions", "max", d.sessions.max, positive);
    c.sessions.ttl = f.get("sessions", "ttl", d.sessions.ttl, duration);

    c.log.format = f.get("log", "format", d.log.format, log_format);
    c.log.level = f.get("log", "level", d.log.level, non_empty);
    c.log.content = f.get("log", "content", false, parse_bool);
    c.with_derived()
}

/// A raw value: from the file (typed TOML) or from env/CLI (a string).
enum Raw {
    Toml(toml::Value),
    Text(String),
}

struct Fields {
    file: toml::Table,
    env: BTreeMap<(String, String), (String, String)>,
    cli: BTreeMap<(String, String), String>,
    seen: BTreeSet<(String, String)>,
    errors: Vec<FieldError>,
}

const SECTIONS: [&str; 5] = ["server", "upstream", "pool", "sessions", "log"];

impl Fields {
    fn new(file: toml::Table, env: &[(String, String)], o: &Overrides) -> Fields {
        let mut errors = Vec::new();
        let mut by_key = BTreeMap::new();
        for (name, value) in env {
            if name == ENV_CONFIG_PATH {
                continue;
            }
            let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            let split = SECTIONS
                .iter()
                .find_map(|s| rest.strip_prefix(&format!("{s}_")).map(|k| (s.to_string(), k.to_string())));
            match split {
                Some(key) => {
                    by_key.insert(key, (name.clone(), value.clone()));
                }
                None => errors.push(FieldError {
                    field: name.clone(),
                    message: format!("unknown setting (sections: {})", SECTIONS.join(", ")),
                }),
            }
        }
        let mut cli = BTreeMap::new();
        let key = |s: &str, k: &str| (s.to_string(), k.to_string());
        if let Some(v) = &o.listen {
            cli.insert(key("server", "listen"), v.clone());
        }
        if let Some(v) = &o.upstream {
            cli.insert(key("upstream", "base_url"), v.clone());
        }
        if let Some(v) = &o.log_format {
            cli.insert(key("log", "format"), v.clone());
        }
        Fields { file, env: by_key, cli, seen: BTreeSet::new(), errors }
    }

    /// Reads `section.key` (CLI > env > file > default) through `parse`.
    fn get<T>(&mut self, section: &str, key: &str, default: T, parse: fn(Raw) -> Result<T, String>) -> T {
        let id = (section.to_string(), key.to_string());
        self.seen.insert(id.clone());
        let (field, raw) = if let Some(v) = self.cli.get(&id) {
            (format!("--{} (for {section}.{key})", cli_flag(&id)), Raw::Text(v.clone()))
        } else if let Some((name, v)) = self.env.get(&id) {
            (name.clone(), Raw::Text(v.clone()))
        } else if let Some(v) = self.file.get(section).and_then(|s| s.get(key)) {
            (format!("{section}.{key}"), Raw::Toml(v.clone()))
        } else {
            return default;
        };
        match parse(raw) {
            Ok(v) => v,
            Err(message) => {
                self.errors.push(FieldError { field, message });
                default
            }
        }
    }

    fn finish(mut self, c: &Config) -> Result<(), ConfigError> {
        for (section, value) in &self.file {
            match value.as_table() {
                Some(t) if SECTIONS.contains(&section.as_str()) => {
                    for key in t.keys() {
                        if !self.seen.contains(&(section.clone(), key.clone())) {
                            self.errors.push(FieldError {
                                field: format!("{section}.{key}"),
                                message: "unknown key".into(),
                            });
                        }
                    }
                }
                _ => self.errors.push(FieldError {
                    field: section.clone(),
                    message: format!("unknown section (expected one of: {})", SECTIONS.join(", ")),
                }),
            }
        }
        for (id, (name, _)) in &self.env {
            if !self.seen.contains(id) {
                self.errors.push(FieldError { field: name.clone(), message: "unknown setting".into() });
            }
        }
        self.errors.extend(cross_checks(c));
        if self.errors.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(self.errors)) }
    }
}

fn cli_flag(id: &(String, String)) -> &'static str {
    match id.1.as_str() {
        "listen" => "listen",
        "base_url" => "upstream",
        _ => "log-format",
    }
}

/// Rules that involve more than one field.
fn cross_checks(c: &Config) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| errors.push(FieldError { field: field.into(), message });
    if !c.server.listen.ip().is_loopback() && !c.server.allow_remote {
        bad(
            "server.listen",
            format!(
                "{} is not a loopback address; tether serves API keys and conversations in clear \
                 text, so binding elsewhere needs `allow_remote = true` (or TETHER_SERVER_ALLOW_REMOTE=true)",
                c.server.listen
            ),
        );
    }
    if c.pool.per_tenant > c.pool.total {
        bad("pool.per_tenant", format!("{} is larger than pool.total ({})", c.pool.per_tenant, c.pool.total));
    }
    if c.pool.pong_timeout <= c.pool.ping_interval {
        bad("pool.pong_timeout", "must be longer than pool.ping_interval".into());
    }
    errors
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn text(raw: Raw, what: &str) -> Result<String, String> {
    match raw {
        Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => Ok(s),
        Raw::Toml(v) => Err(format!("expected {what} as a string, got {}", v.type_str())),
    }
}

fn parse_bool(raw: Raw) -> Result<bool, String> {
    match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(b),
        Raw::Text(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("expected true or false, got {s:?}")),
        },
        Raw::Toml(v) => Err(format!("expected true or false, got {}", v.type_str())),
    }
}

fn integer(raw: Raw) -> Result<i64, String> {
    match raw {
        Raw::Toml(toml::Value::Integer(i)) => Ok(i),
        Raw::Text(s) => s.trim().parse().map_err(|_| format!("expected an integer, got {s:?}")),
        Raw::Toml(v) => Err(format!("expected an integer, got {}", v.type_str())),
    }
}

fn non_negative(raw: Raw) -> Result<usize, String> {
    let i = integer(raw)?;
    usize::try_from(i).map_err(|_| format!("expected an integer >= 0, got {i}"))
}

fn positive(raw: Raw) -> Result<usize, String> {
    match non_negative(raw)? {
        0 => Err("expected an integer >= 1, got 0".into()),
        n => Ok(n),
    }
}

/// hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
fn header_bytes(raw: Raw) -> Result<usize, String> {
    match non_negative(raw)? {
        n if n < 8192 => Err(format!("expected at least 8192 (bytes), got {n}")),
        n => Ok(n),
    }
}

fn duration(raw: Raw) -> Result<Duration, String> {
    let s = text(raw, "a duration (\"30s\", \"500ms\", \"55m\")")?;
    humantime::parse_duration(&s)
        .map_err(|e| format!("expected a duration such as \"30s\" or \"500ms\", got {s:?} ({e})"))
}

fn positive_duration(raw: Raw) -> Result<Duration, String> {
    let d = duration(raw)?;
    if d.is_zero() {
        return Err("expected a duration above zero, such as \"10s\"".into());
    }
    Ok(d)
}

fn parse_addr(raw: Raw) -> Result<SocketAddr, String> {
    let s = text(raw, "an address")?;
    s.parse().map_err(|_| format!("expected IP:PORT such as \"127.0.0.1:8787\", got {s:?}"))
}

fn http_url(raw: Raw) -> Result<String, String> {
    let s = text(raw, "a URL")?;
    url_with_scheme(&s, &["http://", "https://"])?;
    Ok(s.trim_end_matches('/').to_string())
}

fn ws_url_or_empty(raw: Raw) -> Result<String, String> {
    let s = text(raw, "a URL")?;
    if !s.is_empty() {
        url_with_scheme(&s, &["ws://", "wss://"])?;
    }
    Ok(s)
}

fn url_with_scheme(s: &str, schemes: &[&str]) -> Result<(), String> {
    let ok = schemes.iter().any(|p| s.starts_with(p))
        && s.parse::<http::Uri>().map(|u| u.host().is_some()).unwrap_or(false);
    if ok { Ok(()) } else { Err(format!("expected a URL starting with {}, got {s:?}", schemes.join(" or "))) }
}

fn env_name(raw: Raw) -> Result<String, String> {
    let s = text(raw, "an environment variable name")?;
    let valid = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(s) } else { Err(format!("expected an environment variable name (A-Z, 0-9, _), got {s:?}")) }
}

fn non_empty(raw: Raw) -> Result<String, String> {
    let s = text(raw, "a string")?;
    if s.trim().is_empty() { Err("must not be empty".into()) } else { Ok(s) }
}

fn log_format(raw: Raw) -> Result<LogFormat, String> {
    match text(raw, "\"plain\" or \"json\"")?.as_str() {
        "plain" => Ok(LogFormat::Plain),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("expected \"plain\" or \"json\", got {other:?}")),
    }
}
