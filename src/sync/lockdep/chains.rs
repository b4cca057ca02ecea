//! The lock-chain cache (Linux's `lock_chains` / `chainhash_table`): the
//! chain keys of every held-lock sequence already validated.
//!
//! An acquisition's chain key hashes the whole held stack plus the new
//! lock (class with subclass, shared, trylock), so a hit means exactly this
//! sequence was validated before: its dependencies are in the graph and
//! their cycles were checked, so validating again would add and find
//! nothing new. The hot path then costs a hash and one lookup, no graph
//! lock.
//!
//! A fixed open-addressing table of atomic keys (no allocation, ever).
//! Lookups are lock-free; inserts and the reset happen under the graph lock,
//! after the chain's edges are in the graph, so a reader that sees a key
//! sees a chain whose validation is complete. When a probe run is full an
//! older entry is overwritten: forgetting a chain only costs one more
//! validation.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots in the chain hash table (a power of two).
pub const CHAIN_HASH_SIZE: usize = 4096;
/// Slots probed per key before an entry is overwritten.
const PROBE: usize = 8;

static CHAINS: [AtomicU64; CHAIN_HASH_SIZE] = [const { AtomicU64::new(0) }; CHAIN_HASH_SIZE];
/// Entries in use (inserts minus overwrites); protected by the graph lock.
static NR_CHAINS: AtomicUsize = AtomicUsize::new(0);

/// 0 marks a free slot, so a key of 0 is stored as 1 (a collision costs
/// nothing but a validation skipped for a chain whose key hashes to 0 or 1,
/// which the 64-bit mix makes as likely as any other collision).
#[inline]
fn stored(key: u64) -> u64 {
    key.max(1)
}

#[inline]
fn slot(key: u64) -> usize {
    ((key ^ (key >> 32)) as usize) & (CHAIN_HASH_SIZE - 1)
}

/// Whether the chain `key` was validated.
#[inline]
pub(super) fn lookup(key: u64) -> bool {
    let k = stored(key);
    let mut i = slot(k);
    for _ in 0..PROBE {
        match CHAINS[i].load(Ordering::Acquire) {
            v if v == k => return true,
            0 => return false,
            _ => i = (i + 1) & (CHAIN_HASH_SIZE - 1),
        }
    }
    false
}

/// Records that the chain `key` has been validated. Call under the graph
/// lock, after its dependencies were added.
pub(super) fn insert(key: u64) {
    let k = stored(key);
    let first = slot(k);
    let mut i = first;
    for _ in 0..PROBE {
        match CHAINS[i].load(Ordering::Relaxed) {
            v if v == k => return,
            0 => {
                CHAINS[i].store(k, Ordering::Release);
                NR_CHAINS.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => i = (i + 1) & (CHAIN_HASH_SIZE - 1),
        }
    }
    CHAINS[first].store(k, Ordering::Release);
}

/// Forgets every chain (with the graph's dependencies). Under the graph lock.
pub(super) fn reset() {
    for c in &CHAINS {
        c.store(0, Ordering::Relaxed);
    }
    NR_CHAINS.store(0, Ordering::Relaxed);
}

/// Chains cached now.
pub(super) fn nr_chains() -> usize {
    NR_CHAINS.load(Ordering::Relaxed)
}
