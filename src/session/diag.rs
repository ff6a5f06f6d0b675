//! Explaining a miss: tombstones of recently dropped tips, and the nearest
//! session of the same tenant. Diagnostics only: nothing here can make a
//! request continue.

use std::collections::VecDeque;

use super::canon::ItemKind;
use super::entry::TipMap;
use super::fingerprint::Fingerprint;
use super::plan::FreshReason;
use super::store::SessionStore;

/// Dropped tips remembered, oldest forgotten first.
pub const TOMBSTONES: usize = 4096;

/// A bounded FIFO of tips that stopped being tips, with the reason.
#[derive(Default)]
pub(super) struct Tombstones {
    reasons: TipMap<FreshReason>,
    order: VecDeque<u128>,
}

impl Tombstones {
    pub(super) fn insert(&mut self, tip: u128, reason: FreshReason) {
        if self.reasons.insert(tip, reason).is_none() {
            self.order.push_back(tip);
        }
        while self.order.len() > TOMBSTONES {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }

    pub(super) fn get(&self, tip: u128) -> Option<FreshReason> {
        self.reasons.get(&tip).copied()
    }

    pub(super) fn approx_bytes(&self) -> usize {
        self.order.capacity() * 16 + self.reasons.capacity() * (16 + 24 + 1)
    }
}

impl SessionStore {
    /// The most specific reason a request with no live tip is fresh.
    pub(super) fn diagnose(&self, fp: &Fingerprint) -> FreshReason {
        let m = fp.len();
        for k in (1..=m).rev() {
            if let Some(reason) = self.tombs.get(fp.chain_at(k)) {
                return reason;
            }
        }
        let candidates: Vec<_> = self
            .by_tenant
            .get(&fp.tenant())
            .into_iter()
            .flatten()
            .filter_map(|id| self.sessions.peek(id))
            .collect();
        if candidates.is_empty() {
            return FreshReason::FirstTurn;
        }
        for s in &candidates {
            if s.items <= m && fp.content_at(s.items) == s.content_tip {
                if s.model != fp.model_hash() {
                    return FreshReason::ModelChanged;
                }
                if s.store != fp.store() {
                    return FreshReason::StoreChanged;
                }
            }
        }
        let mut best: Option<(usize, ItemKind)> = None;
        for s in &candidates {
            let common =
                s.diag.iter().enumerate().take_while(|(i, d)| fp.short_hash(*i) == Some(d.hash)).count();
            if best.is_none_or(|(b, _)| common > b)
                && let Some(ours) = s.kind(common)
            {
                best = Some((common, ours));
            }
        }
        match best {
            Some((index, ours)) if index > 0 => {
                FreshReason::DivergedAt { index, ours, theirs: fp.kind(index) }
            }
            _ => FreshReason::NoMatchingTip,
        }
    }
}
