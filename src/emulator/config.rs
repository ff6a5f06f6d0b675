//! The emulator's configuration, in code and as a TOML file.
//!
//! File keys (all optional; unknown keys are an error):
//! ```toml
//! listen = "127.0.0.1:0"        # where to bind
//! profile = "zero"              # base cost model: zero | illustrative
//! script = "tools=2,answer=200" # default script (see `script`)
//! ws = "enabled"                # enabled | refuse426 | refuse404
//! accepted_keys = ["sk-test"]   # omit to accept any Bearer key
//! max_connection_age_ms = 3600000
//! warmup = false                # accept `generate:false` warm-ups
//! ping_interval_ms = 20000      # omit to never send pings
//! record_contexts = true        # oracle records (off for long benchmarks)
//! [cost]                        # overrides of the profile's fields (see `CostModel`)
//! prefill_per_uncached_token_us = 100
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::cost::{CostModel, profile};
use super::script::Script;

/// What the emulator does with a WebSocket upgrade on `/v1/responses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WsMode {
    /// WebSocket mode is available.
    #[default]
    Enabled,
    /// Upgrades are answered 426 Upgrade Required.
    Refuse426,
    /// Upgrades are answered 404 Not Found.
    Refuse404,
}

/// Everything the emulator needs to run.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to bind (`127.0.0.1:0` by default).
    pub listen: SocketAddr,
    /// Delays and prefix-cache behaviour.
    pub cost: CostModel,
    /// The default script, overridable per request by `metadata.emulator_script`.
    pub script: Script,
    /// Whether WebSocket mode is offered.
    pub ws: WsMode,
    /// Keys accepted as `Authorization: Bearer <key>`; `None` accepts any key.
    pub accepted_keys: Option<Vec<String>>,
    /// Age after which a WebSocket answers `websocket_connection_limit_reached`.
    pub max_connection_age: Duration,
    /// Whether `generate:false` warm-ups are supported.
    pub warmup: bool,
    /// Interval of server-sent pings; `None` sends none.
    pub ping_interval: Option<Duration>,
    /// Whether the oracle records contexts (turn off for long benchmarks:
    /// records hold every context in full).
    pub record_contexts: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cost: CostModel::zero(),
            script: Script::default(),
            ws: WsMode::Enabled,
            accepted_keys: None,
            max_connection_age: Duration::from_secs(60 * 60),
            warmup: false,
            ping_interval: None,
            record_contexts: true,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, or unknown / mistyped keys.
    #[error("emulator config: {0}")]
    Toml(#[from] toml::de::Error),
    /// An unknown cost profile name.
    #[error("emulator config: unknown profile `{0}` (zero | illustrative)")]
    Profile(String),
    /// A bad script string.
    #[error("emulator config: {0}")]
    Script(#[from] super::script::ScriptError),
    /// A bad `[cost]` override.
    #[error("emulator config: cost: {0}")]
    Cost(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<SocketAddr>,
    profile: Option<String>,
    script: Option<String>,
    ws: Option<WsMode>,
    accepted_keys: Option<Vec<String>>,
    max_connection_age_ms: Option<u64>,
    warmup: Option<bool>,
    ping_interval_ms: Option<u64>,
    record_contexts: Option<bool>,
    cost: Option<toml::Table>,
}

impl EmulatorConfig {
    /// Parses a TOML configuration (see the module docs); unknown keys are errors.
    pub fn from_toml_str(text: &str) -> Result<EmulatorConfig, ConfigError> {
        let file: File = toml::from_str(text)?;
        let mut config = EmulatorConfig::default();
        if let Some(listen) = file.listen {
            config.listen = listen;
        }
        if let Some(name) = file.profile {
            config.cost = profile(&name).ok_or(ConfigError::Profile(name))?;
        }
        if let Some(overrides) = file.cost {
            let mut table =
                toml::Table::try_from(&config.cost).map_err(|e| ConfigError::Cost(e.to_string()))?;
            table.extend(overrides);
            config.cost = table.try_into().map_err(|e: toml::de::Error| ConfigError::Cost(e.to_string()))?;
        }
        if let Some(script) = file.script {
            config.script = script.parse()?;
        }
        config.ws = file.ws.unwrap_or_default();
        config.accepted_keys = file.accepted_keys;
        if let Some(ms) = file.max_connection_age_ms {
            config.max_connection_age = Duration::from_millis(ms);
        }
        config.warmup = file.warmup.unwrap_or(false);
        config.ping_interval = file.ping_interval_ms.map(Duration::from_millis);
        config.record_contexts = file.record_contexts.unwrap_or(true);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let config = EmulatorConfig::from_toml_str(
            r#"
            listen = "127.0.0.1:9999"
            profile = "illustrative"
            script = "tools=1"
            ws = "refuse426"
            accepted_keys = ["k"]
            max_connection_age_ms = 5
            warmup = true
            ping_interval_ms = 100
            record_contexts = false
            [cost]
            per_request_ms = 1
            http_prefix_cache_hit_rate = 1.0
            "#,
        )
        .expect("config");
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.cost.per_request, Duration::from_millis(1));
        assert_eq!(config.cost.handshake, Duration::from_millis(150));
        assert_eq!(config.cost.http_prefix_cache_hit_rate, 1.0);
        assert_eq!(config.script.tools, 1);
        assert_eq!(config.ws, WsMode::Refuse426);
        assert_eq!(config.max_connection_age, Duration::from_millis(5));
        assert!(config.warmup);
        assert!(!config.record_contexts);
        assert_eq!(config.ping_interval, Some(Duration::from_millis(100)));
    }

    #[test]
    fn rejects_unknown_keys() {
        assert!(EmulatorConfig::from_toml_str("nope = 1").is_err());
        assert!(EmulatorConfig::from_toml_str("[cost]\nnope = 1").is_err());
        assert!(EmulatorConfig::from_toml_str("profile = \"fast\"").is_err());
        assert!(EmulatorConfig::from_toml_str("script = \"x=1\"").is_err());
        assert!(EmulatorConfig::from_toml_str("").is_ok());
    }
}
