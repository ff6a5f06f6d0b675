//! A memo of item hashes: the canonical hash of each item text seen lately.
//!
//! An agent loop resends every earlier item on every turn, byte for byte
//! (each client serialises its history the same way each time), so all but
//! the newest few items of a request were hashed on an earlier turn. Their
//! canonical hash is a pure function of their text: the memo maps a hash
//! of the exact text to the canonical hash and kind, and a request's known
//! items cost one XXH3 pass over their bytes instead of the canonical scan.
//!
//! - The key is XXH3-128 of the item's text, seeded by the requesting
//!   tenant (a salted hash, secret to the process): one tenant's requests
//!   never find another's entries, not even by timing. A key collision can
//!   only mis-hash an item in the colliding tenant's own chain, the same
//!   128-bit assumption every chain hash already makes.
//! - Bounded: a direct-mapped table of [`SLOTS`] entries (1.5 MB), filled
//!   as it is used; a new entry overwrites whatever shared its slot. A miss
//!   costs only the scan the memo would have saved.
//! - Only successes are kept: an item the scan or the tree path refuses is
//!   refused again on every turn, with its error.

use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::canon::ItemKind;
use super::tenant::TenantId;

/// Entries in the memo: enough for the live items of a few hundred agent
/// conversations of ~100 items each.
pub const SLOTS: usize = 1 << 15;

/// Remembered canonical hashes, keyed by the hash of an item's exact text.
#[derive(Debug)]
pub struct ItemMemo {
    /// `[key, canonical hash]` per slot; a zero key marks an empty slot.
    hashes: Vec<[u128; 2]>,
    kinds: Vec<ItemKind>,
    mask: usize,
}

impl Default for ItemMemo {
    fn default() -> Self {
        ItemMemo::with_slots(SLOTS)
    }
}

impl ItemMemo {
    /// A memo of `slots` entries (rounded up to a power of two, at least 1).
    pub fn with_slots(slots: usize) -> ItemMemo {
        let n = slots.max(1).next_power_of_two();
        // Zeroed, so the pages are only committed as slots are written.
        ItemMemo { hashes: vec![[0; 2]; n], kinds: vec![ItemKind::Missing; n], mask: n - 1 }
    }

    /// The memo key of `text` for `tenant`; zero (never stored) when the
    /// digest happens to be zero.
    pub fn key(tenant: TenantId, text: &str) -> u128 {
        let seed = (tenant.0 as u64) ^ ((tenant.0 >> 64) as u64);
        xxh3_128_with_seed(text.as_bytes(), seed)
    }

    fn slot(&self, key: u128) -> usize {
        ((key as u64) as usize) & self.mask
    }

    /// The canonical hash and kind remembered for `key`.
    pub fn get(&self, key: u128) -> Option<(u128, ItemKind)> {
        let i = self.slot(key);
        match self.hashes[i] {
            [k, item] if k == key && key != 0 => Some((item, self.kinds[i])),
            _ => None,
        }
    }

    /// Remembers the canonical hash and kind of the text whose key is `key`.
    pub fn put(&mut self, key: u128, item: u128, kind: ItemKind) {
        if key == 0 {
            return;
        }
        let i = self.slot(key);
        self.hashes[i] = [key, item];
        self.kinds[i] = kind;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::value::RawValue;

    use super::*;
    use crate::session::{ChainSeed, ItemError, Role, fingerprint, fingerprint_memo};

    fn raw(texts: &[String]) -> Vec<Box<RawValue>> {
        texts.iter().map(|t| RawValue::from_string(t.clone()).unwrap()).collect()
    }

    /// Items of every path: plain, written differently, nested deeper than
    /// the raw scan goes (the tree path hashes it), and a repeat.
    fn items() -> Vec<String> {
        let deep = format!(
            r#"{{"type":"function_call_output","call_id":"c1","output":{}1{}}}"#,
            "[".repeat(110),
            "]".repeat(110)
        );
        [
            r#"{"role":"system","content":"be brief"}"#,
            r#"{"type":"message","role":"user","content":[{"type":"input_text","text":"hi \u00e9"}]}"#,
            r#"{ "content" : "hi é", "role" : "user" }"#,
            r#"{"type":"function_call","id":"fc_1","call_id":"c1","name":"ls","arguments":"{}","status":"completed"}"#,
            &deep,
            r#"{"role":"system","content":"be brief"}"#,
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn the_chain_is_the_same_with_the_memo_cold_warm_or_crowded() {
        let items = raw(&items());
        let items: Vec<&RawValue> = items.iter().map(|b| &**b).collect();
        for tenant in [TenantId(1), TenantId(2)] {
            let seed = ChainSeed { tenant, model: "m", store: true };
            let plain = fingerprint(&seed, &items).unwrap();
            for slots in [1, 2, SLOTS] {
                let memo = Mutex::new(ItemMemo::with_slots(slots));
                let cold = fingerprint_memo(&seed, &items, &memo).unwrap();
                let warm = fingerprint_memo(&seed, &items, &memo).unwrap();
                assert_eq!(cold, plain, "{slots} slots, cold");
                assert_eq!(warm, plain, "{slots} slots, warm");
            }
        }
        // The memo learned the items: a warm lookup answers every one.
        let memo = Mutex::new(ItemMemo::default());
        let seed = ChainSeed { tenant: TenantId(1), model: "m", store: true };
        let plain = fingerprint_memo(&seed, &items, &memo).unwrap();
        let m = memo.lock().unwrap();
        for (i, item) in items.iter().enumerate() {
            let known = m.get(ItemMemo::key(TenantId(1), item.get()));
            assert_eq!(known, Some((plain.item_hash(i).unwrap(), plain.kind(i))), "item {i}");
            assert_eq!(m.get(ItemMemo::key(TenantId(2), item.get())), None, "item {i}, other tenant");
        }
    }

    #[test]
    fn a_refused_item_is_refused_every_time() {
        let items = raw(&[items()[0].clone(), "[1,2]".into(), r#"{"a":"\ud800"}"#.into()]);
        let memo = Mutex::new(ItemMemo::default());
        let seed = ChainSeed { tenant: TenantId(1), model: "m", store: true };
        for bad in 1..3 {
            let items = [&*items[0], &*items[bad]];
            let plain = fingerprint(&seed, &items).unwrap_err();
            for _ in 0..2 {
                assert_eq!(fingerprint_memo(&seed, &items, &memo).unwrap_err(), plain);
            }
            assert!(matches!(
                plain,
                ItemError::NotAnObject { index: 1 } | ItemError::Invalid { index: 1, .. }
            ));
        }
    }

    #[test]
    fn remembers_by_exact_text_and_tenant() {
        let mut memo = ItemMemo::with_slots(64);
        let (a, b) = (TenantId(1), TenantId(2));
        let text = r#"{"role":"user","content":"hi"}"#;
        let key = ItemMemo::key(a, text);
        assert_eq!(memo.get(key), None);
        memo.put(key, 42, ItemKind::Message(Role::User));
        assert_eq!(memo.get(key), Some((42, ItemKind::Message(Role::User))));
        // Another tenant, or the same item spelled otherwise, has its own key.
        assert_ne!(ItemMemo::key(b, text), key);
        assert_eq!(memo.get(ItemMemo::key(b, text)), None);
        assert_eq!(memo.get(ItemMemo::key(a, r#"{"content":"hi","role":"user"}"#)), None);
    }

    #[test]
    fn a_slot_keeps_its_latest_entry_only() {
        let mut memo = ItemMemo::with_slots(1);
        memo.put(5, 50, ItemKind::FunctionCall);
        memo.put(7, 70, ItemKind::Reasoning);
        assert_eq!(memo.get(5), None);
        assert_eq!(memo.get(7), Some((70, ItemKind::Reasoning)));
        // The zero key is never stored, so an empty slot never answers.
        memo.put(0, 1, ItemKind::FunctionCall);
        assert_eq!(memo.get(0), None);
        assert_eq!(ItemMemo::with_slots(4).get(0), None);
    }
}
