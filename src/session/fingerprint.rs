//! Chained fingerprints of a list of items.
//!
//! `h0 = H(tenant, model, store)` and `h_k = H(h_{k-1}, item_k)`, where
//! `item_k` is the 128-bit canonical hash of the k-th item (see `canon`). A
//! second chain `g` is seeded by the tenant alone; the store uses it only to
//! explain a miss ("same history, other model"), never to continue.

use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::xxh3_128;

use super::canon::{ItemKind, Node, Scratch, hash_item, hash_raw_item};
use super::memo::ItemMemo;
use super::tenant::TenantId;

/// What seeds a chain: a tip only ever matches a request with the same three.
#[derive(Debug, Clone, Copy)]
pub struct ChainSeed<'a> {
    /// The tenant the request belongs to.
    pub tenant: TenantId,
    /// The request's `model`.
    pub model: &'a str,
    /// The request's `store` (default `true`).
    pub store: bool,
}

/// Why an item could not be fingerprinted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The item is not valid JSON.
    #[error("input item {index} is not valid JSON: {message}")]
    Invalid {
        /// Position of the item in the chain.
        index: usize,
        /// The parser's message.
        message: String,
    },
    /// The item is valid JSON but not an object.
    #[error("input item {index} is not a JSON object")]
    NotAnObject {
        /// Position of the item in the chain.
        index: usize,
    },
}

/// Chained hashes over a list of items, plus per-item kinds and hashes for
/// diagnostics. Holds no content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    tenant: TenantId,
    model: u64,
    store: bool,
    seed: u128,
    content_seed: u128,
    items: Vec<u128>,
    kinds: Vec<ItemKind>,
    chain: Vec<u128>,
    content: Vec<u128>,
}

fn link(prev: u128, item: u128) -> u128 {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&prev.to_le_bytes());
    b[16..].copy_from_slice(&item.to_le_bytes());
    xxh3_128(&b)
}

/// Room kept for the items a response appends before its commit (most
/// turns end with a handful: reasoning, a message, some function calls).
const OUTPUT_ROOM: usize = 8;

/// Fingerprints `items` (the request's `input` array, item by item).
pub fn fingerprint(seed: &ChainSeed<'_>, items: &[&RawValue]) -> Result<Fingerprint, ItemError> {
    let mut fp = Fingerprint::empty(seed, items.len() + OUTPUT_ROOM);
    fp.extend(items)?;
    Ok(fp)
}

/// [`fingerprint`] with the hashes `memo` remembers (see [`ItemMemo`]).
pub fn fingerprint_memo(
    seed: &ChainSeed<'_>,
    items: &[&RawValue],
    memo: &Mutex<ItemMemo>,
) -> Result<Fingerprint, ItemError> {
    let mut fp = Fingerprint::empty(seed, items.len() + OUTPUT_ROOM);
    fp.extend_memo(items, memo)?;
    Ok(fp)
}

/// Fingerprints items that were already parsed into [`Value`]s.
pub fn fingerprint_values(seed: &ChainSeed<'_>, items: &[Value]) -> Result<Fingerprint, ItemError> {
    let mut fp = Fingerprint::empty(seed, items.len() + OUTPUT_ROOM);
    fp.extend_values(items)?;
    Ok(fp)
}

/// The canonical hash of one item's text, the `index`-th of its chain: the
/// raw scan, or the tree path for what the scan declines (errors included).
fn hash_text<'a>(
    text: &'a str,
    index: usize,
    scratch: &mut Scratch<'a>,
) -> Result<(u128, ItemKind), ItemError> {
    if let Some(hashed) = hash_raw_item(text, scratch) {
        return Ok(hashed);
    }
    let node = serde_json::from_str::<Node<'_>>(text)
        .map_err(|e| ItemError::Invalid { index, message: e.to_string() })?;
    hash_object(&node, index)
}

/// The tree path's hash of an item, which must be an object.
fn hash_object(node: &Node<'_>, index: usize) -> Result<(u128, ItemKind), ItemError> {
    match node {
        Node::Obj(_) => Ok(hash_item(node)),
        _ => Err(ItemError::NotAnObject { index }),
    }
}

impl Fingerprint {
    /// A chain with no items yet (only the seed).
    pub fn empty(seed: &ChainSeed<'_>, capacity: usize) -> Fingerprint {
        // Each seed hashed in one call: the same digest as a streaming hasher
        // fed the same bytes, without its state to set up.
        let tenant = seed.tenant.0.to_le_bytes();
        let mut h = Vec::with_capacity(15 + 16 + 8 + seed.model.len() + 1);
        h.extend_from_slice(b"tether/chain/v1");
        h.extend_from_slice(&tenant);
        h.extend_from_slice(&(seed.model.len() as u64).to_le_bytes());
        h.extend_from_slice(seed.model.as_bytes());
        h.push(u8::from(seed.store));
        let mut c = [0u8; 17 + 16];
        c[..17].copy_from_slice(b"tether/content/v1");
        c[17..].copy_from_slice(&tenant);
        Fingerprint {
            tenant: seed.tenant,
            model: xxhash_rust::xxh3::xxh3_64(seed.model.as_bytes()),
            store: seed.store,
            seed: xxh3_128(&h),
            content_seed: xxh3_128(&c),
            items: Vec::with_capacity(capacity),
            kinds: Vec::with_capacity(capacity),
            chain: Vec::with_capacity(capacity),
            content: Vec::with_capacity(capacity),
        }
    }

    /// Number of items in the chain.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the chain has no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends items (e.g. a response's output before `commit`).
    pub fn extend(&mut self, items: &[&RawValue]) -> Result<(), ItemError> {
        let longest = items.iter().map(|raw| raw.get().len()).max().unwrap_or(0);
        let mut scratch = Scratch::for_items(longest);
        self.reserve(items.len());
        for raw in items {
            let (item, kind) = hash_text(raw.get(), self.len(), &mut scratch)?;
            self.push(item, kind);
        }
        Ok(())
    }

    /// [`Fingerprint::extend`], taking the hash of each item whose exact
    /// text `memo` remembers for this tenant from it, and teaching it the
    /// others. The chain is the same either way.
    pub fn extend_memo(&mut self, items: &[&RawValue], memo: &Mutex<ItemMemo>) -> Result<(), ItemError> {
        let mut known: Vec<(u128, Option<(u128, ItemKind)>)> =
            items.iter().map(|raw| (ItemMemo::key(self.tenant, raw.get()), None)).collect();
        {
            let memo = memo.lock().unwrap_or_else(|e| e.into_inner());
            for (key, hashed) in &mut known {
                *hashed = memo.get(*key);
            }
        }
        // Only the items the memo did not know are scanned (usually the
        // newest few), with buffers sized for them.
        let unknown = items.iter().zip(&known).filter(|(_, (_, hashed))| hashed.is_none());
        let longest = unknown.map(|(raw, _)| raw.get().len()).max().unwrap_or(0);
        let mut scratch = None;
        let mut learned = Vec::new();
        self.reserve(items.len());
        for (raw, (key, known)) in items.iter().zip(known) {
            let (item, kind) = match known {
                Some(hashed) => hashed,
                None => {
                    let scratch = scratch.get_or_insert_with(|| Scratch::for_items(longest));
                    let hashed = hash_text(raw.get(), self.len(), scratch)?;
                    learned.push((key, hashed));
                    hashed
                }
            };
            self.push(item, kind);
        }
        if !learned.is_empty() {
            let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
            for (key, (item, kind)) in learned {
                memo.put(key, item, kind);
            }
        }
        Ok(())
    }

    /// Appends items that were already parsed into [`Value`]s.
    pub fn extend_values(&mut self, items: &[Value]) -> Result<(), ItemError> {
        self.reserve(items.len());
        for v in items {
            let index = self.len();
            let node =
                Node::deserialize(v).map_err(|e| ItemError::Invalid { index, message: e.to_string() })?;
            let (item, kind) = hash_object(&node, index)?;
            self.push(item, kind);
        }
        Ok(())
    }

    fn reserve(&mut self, more: usize) {
        self.items.reserve(more);
        self.kinds.reserve(more);
        self.chain.reserve(more);
        self.content.reserve(more);
    }

    fn push(&mut self, item: u128, kind: ItemKind) {
        let prev = self.chain.last().copied().unwrap_or(self.seed);
        let prev_content = self.content.last().copied().unwrap_or(self.content_seed);
        self.items.push(item);
        self.kinds.push(kind);
        self.chain.push(link(prev, item));
        self.content.push(link(prev_content, item));
    }

    /// `h_k`: the chain over the first `k` items (`h_0` is the seed).
    pub fn chain_at(&self, k: usize) -> u128 {
        match k {
            0 => self.seed,
            k => self.chain.get(k - 1).copied().unwrap_or(self.seed),
        }
    }

    /// The chain over all items: what `commit` records as the new tip.
    pub fn tip(&self) -> u128 {
        self.chain_at(self.len())
    }

    /// The tenant-only chain over the first `k` items (diagnostics only).
    pub fn content_at(&self, k: usize) -> u128 {
        match k {
            0 => self.content_seed,
            k => self.content.get(k - 1).copied().unwrap_or(self.content_seed),
        }
    }

    /// The kind of item `i`, or [`ItemKind::Missing`] past the end.
    pub fn kind(&self, i: usize) -> ItemKind {
        self.kinds.get(i).copied().unwrap_or(ItemKind::Missing)
    }

    /// A short (32-bit) hash of item `i`, for diagnostics.
    pub fn short_hash(&self, i: usize) -> Option<u32> {
        self.items.get(i).map(|h| *h as u32)
    }

    /// The canonical 128-bit hash of item `i` (unchained).
    pub fn item_hash(&self, i: usize) -> Option<u128> {
        self.items.get(i).copied()
    }

    /// The tenant the chain is seeded with.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// A 64-bit hash of the model name the chain is seeded with.
    pub fn model_hash(&self) -> u64 {
        self.model
    }

    /// The `store` flag the chain is seeded with.
    pub fn store(&self) -> bool {
        self.store
    }
}
