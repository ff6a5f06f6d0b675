//! The emulator's cost model: named delays that stand in for the real
//! service's handshake, upload, validation, prefill and decode times.
//!
//! Tokens are estimated as bytes / 4. Every delay is a `tokio::time::sleep`,
//! so tests under paused time see them without waiting, and the `zero`
//! profile skips them entirely.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Named delays and rates; every field is optional in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostModel {
    /// Paid once per new TCP connection (TLS handshake; for WebSocket also the upgrade).
    #[serde(with = "millis", rename = "handshake_ms")]
    pub handshake: Duration,
    /// Fixed latency of every request (routing, scheduling), before the first event.
    #[serde(with = "millis", rename = "per_request_ms")]
    pub per_request: Duration,
    /// Upload rate for request bytes; `0` means infinitely fast.
    pub upload_bytes_per_sec: u64,
    /// Validation time per context item the service must render.
    #[serde(with = "micros", rename = "per_item_validation_us")]
    pub per_item_validation: Duration,
    /// Prefill time per input token that is not cached.
    #[serde(with = "micros", rename = "prefill_per_uncached_token_us")]
    pub prefill_per_uncached_token: Duration,
    /// Decode time per output token (spread over the delta events).
    #[serde(with = "micros", rename = "decode_per_output_token_us")]
    pub decode_per_output_token: Duration,
    /// Extra time per token to rehydrate a stored (`store:true`) parent that is
    /// not the connection's latest response.
    #[serde(with = "micros", rename = "rehydrate_per_token_us")]
    pub rehydrate_per_token: Duration,
    /// Fraction (0..=1) of HTTP requests whose longest known prefix is a
    /// prefix-cache hit; decided deterministically from the context hash.
    pub http_prefix_cache_hit_rate: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        Self::zero()
    }
}

impl CostModel {
    /// No delays at all, no HTTP prefix-cache hits: for tests and overhead benchmarks.
    pub fn zero() -> Self {
        CostModel {
            handshake: Duration::ZERO,
            per_request: Duration::ZERO,
            upload_bytes_per_sec: 0,
            per_item_validation: Duration::ZERO,
            prefill_per_uncached_token: Duration::ZERO,
            decode_per_output_token: Duration::ZERO,
            rehydrate_per_token: Duration::ZERO,
            http_prefix_cache_hit_rate: 0.0,
        }
    }

    /// Plausible orders of magnitude for demos, not measurements: 150 ms
    /// handshake, 40 ms per request, 10 MB/s upload, 20 µs per item, 50 µs
    /// per uncached token (20k tokens/s prefill), 5 ms per output token
    /// (200 tokens/s decode), 20 µs per rehydrated token, and 80% of HTTP
    /// requests hitting the prefix cache (the service's automatic prompt
    /// caching is good but not certain across requests).
    pub fn illustrative() -> Self {
        CostModel {
            handshake: Duration::from_millis(150),
            per_request: Duration::from_millis(40),
            upload_bytes_per_sec: 10_000_000,
            per_item_validation: Duration::from_micros(20),
            prefill_per_uncached_token: Duration::from_micros(50),
            decode_per_output_token: Duration::from_millis(5),
            rehydrate_per_token: Duration::from_micros(20),
            http_prefix_cache_hit_rate: 0.8,
        }
    }

    /// Time to upload `bytes` at the configured rate.
    pub fn upload(&self, bytes: usize) -> Duration {
        if self.upload_bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(bytes as f64 / self.upload_bytes_per_sec as f64)
    }

    /// Time before the first event: per-request latency, upload, validation,
    /// prefill of the uncached tokens and rehydration.
    pub fn before_first_event(
        &self,
        bytes: usize,
        items: usize,
        uncached_tokens: u64,
        rehydrated_tokens: u64,
    ) -> Duration {
        self.per_request
            + self.upload(bytes)
            + self.per_item_validation * saturating_u32(items as u64)
            + self.prefill_per_uncached_token * saturating_u32(uncached_tokens)
            + self.rehydrate_per_token * saturating_u32(rehydrated_tokens)
    }

    /// Decode time for `tokens` output tokens.
    pub fn decode(&self, tokens: u64) -> Duration {
        self.decode_per_output_token * saturating_u32(tokens)
    }
}

/// The named profiles `zero` and `illustrative`, for the CLI's `--profile`.
pub fn profile(name: &str) -> Option<CostModel> {
    match name {
        "zero" => Some(CostModel::zero()),
        "illustrative" => Some(CostModel::illustrative()),
        _ => None,
    }
}

/// Tokens estimated from a byte count (bytes / 4, rounded up).
pub fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Sleeps unless the duration is zero (so the zero profile never yields to the timer).
pub(crate) async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?.max(0.0) / 1e3))
    }
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e6)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?.max(0.0) / 1e6))
    }
}
