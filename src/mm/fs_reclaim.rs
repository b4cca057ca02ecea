//! The `fs_reclaim` lockdep annotation (no-op placeholder; the real one
//! records "held locks -> fs_reclaim" for __GFP_FS allocations).

use crate::mm::gfp::Gfp;

/// Called on every allocation that may block.
pub fn might_alloc(gfp: Gfp) {
    let _ = gfp;
}

/// Entered around direct reclaim.
pub fn fs_reclaim_acquire(gfp: Gfp) {
    let _ = gfp;
}

pub fn fs_reclaim_release(gfp: Gfp) {
    let _ = gfp;
}
