//! Conversation fingerprinting and the session store: pure and synchronous.
//!
//! # How matching works
//!
//! Every item of a request's `input` is reduced to a 128-bit XXH3 hash of its
//! canonical form (DESIGN §3): keys sorted, `null`
//! fields and empty `annotations`/`logprobs` dropped, server `id`/`status`
//! ignored on messages and function calls/outputs, string content equal to one
//! text part, assistant `output_text` equal to `input_text`. Anything else is
//! compared exactly: when unsure, items differ, because a miss only costs
//! bytes while a false match corrupts the model's context.
//!
//! Item hashes are chained, `h0 = H(tenant, model, store)`,
//! `h_k = H(h_{k-1}, item_k)`, so `h_k` identifies the whole prefix of `k`
//! items for one tenant, model and store flag. After a response completes, the
//! proxy extends the request's chain with the response's output items and
//! [`SessionStore::commit`]s the result: that hash is the session's *tip*.
//!
//! [`SessionStore::plan`] looks up the request's prefixes, longest first. The
//! first live tip found at `k < M` continues (send `input[k..]` with
//! `previous_response_id`) if the session's socket is idle and still holds
//! that response as its latest; a tip at `k == M` is `EmptyDelta`. Every other
//! case is fresh, with a [`FreshReason`]: a busy, closed or moved-on socket,
//! or, when no tip matches, a tombstone of a recently dropped tip (evicted,
//! expired, superseded, incomplete), the same history under another model or
//! store flag, or the first item where the request diverges from the nearest
//! session of its tenant.
//!
//! Memory per session is a few hashes, counters, the response id and, for
//! diagnostics, a 32-bit hash and kind of its first [`DIAG_ITEMS`] items
//! (8 bytes each); never content: about 380 bytes plus 8 per item, so a
//! 200-item session costs about 2 KB ([`SessionInfo::approx_bytes`]). The
//! store is bounded by an LRU of [`SessionLimits::max`] sessions and an idle
//! [`SessionLimits::ttl`]; [`TOMBSTONES`] dropped tips are remembered (hash and
//! reason only) to explain misses.
//!
//! The caller owns the sockets and tells the store about them through
//! [`SocketStates`]; the store does no I/O and takes time as an `Instant`.

mod canon;
mod diag;
mod entry;
mod fingerprint;
mod memo;
mod plan;
mod store;
mod tenant;

pub use canon::{ItemKind, Role};
pub use diag::TOMBSTONES;
pub use entry::{DIAG_ITEMS, SessionInfo};
pub use fingerprint::{ChainSeed, Fingerprint, ItemError, fingerprint, fingerprint_memo, fingerprint_values};
pub use memo::ItemMemo;
pub use plan::{FreshReason, Plan, SessionId, SocketId, SocketStates, SocketStatus};
pub use store::{SessionLimits, SessionStore};
pub use tenant::TenantId;
