//! The `fs_reclaim` lockdep annotation (Linux's `mm/page_alloc.c`).
//!
//! Memory reclaim may call into the filesystem, so for lockdep it is a lock:
//! an allocation that may enter reclaim "takes" the pseudo-lock `fs_reclaim`
//! (recording "every held lock -> fs_reclaim") and reclaim holds it while it
//! runs shrinkers (recording "fs_reclaim -> every lock a shrinker takes").
//! A lock on both sides closes a cycle, reported before any real deadlock.
//!
//! Only allocations that could recurse into the filesystem count: the mask
//! is filtered by the task's NOFS/NOIO scopes, and an allocation that cannot
//! sleep, a reclaimer (PF_MEMALLOC) and __GFP_NOLOCKDEP take nothing.
//! Trylocks in reclaim add no edges, which is why shrinkers use them.

use crate::mm::gfp::Gfp;
use crate::mm::scope::current_gfp_context;
use crate::sync::lockdep::{self, Acquire, LockClassKey, LockdepMap};
use crate::task::{self, TaskFlags};
use core::marker::PhantomData;
use core::panic::Location;

static FS_RECLAIM_KEY: LockClassKey = LockClassKey::new("fs_reclaim");

/// The pseudo-lock: a lockdep map with no lock behind it.
pub static FS_RECLAIM_MAP: LockdepMap = LockdepMap::new(&FS_RECLAIM_KEY);

/// The instance address lockdep matches acquire and release by.
fn instance() -> usize {
    &FS_RECLAIM_MAP as *const LockdepMap as usize
}

/// `__need_reclaim`: whether an allocation with `gfp` may enter direct
/// reclaim from this task, as far as lockdep is concerned.
fn need_reclaim(gfp: Gfp) -> bool {
    gfp.contains(Gfp::__GFP_DIRECT_RECLAIM)
        && !task::current().flags().contains(TaskFlags::PF_MEMALLOC)
        && !gfp.contains(Gfp::__GFP_NOLOCKDEP)
}

/// Whether `gfp`, in the current task's scope, takes `fs_reclaim`.
fn takes_fs_reclaim(gfp: Gfp) -> bool {
    let gfp = current_gfp_context(gfp);
    need_reclaim(gfp) && gfp.contains(Gfp::__GFP_FS)
}

/// Enters a section that may reclaim with `gfp` (exclusive, not a trylock).
#[track_caller]
pub fn fs_reclaim_acquire(gfp: Gfp) {
    if takes_fs_reclaim(gfp) {
        lockdep::lock_acquire(
            &FS_RECLAIM_MAP,
            instance(),
            Acquire::EXCLUSIVE,
            Location::caller(),
        );
    }
}

/// Leaves the section; decides from `gfp` and the task again, like Linux.
#[track_caller]
pub fn fs_reclaim_release(gfp: Gfp) {
    if takes_fs_reclaim(gfp) {
        lockdep::lock_release(&FS_RECLAIM_MAP, instance(), Location::caller());
    }
}

/// Called on every allocation: records "held locks -> fs_reclaim" for an
/// allocation that could reclaim, even when no reclaim happens this time,
/// and checks that a sleeping allocation is made where sleeping is allowed
/// (if not, `might_sleep` reports it at the caller and counts it).
///
/// The `fs_reclaim` part is a lockdep annotation only: with lockdep off it
/// would record nothing, so it is skipped after one load of the mode.
#[track_caller]
#[inline]
pub fn might_alloc(gfp: Gfp) {
    let _ = might_alloc_gfp(gfp);
}

/// [`might_alloc`], returning the gfp to allocate with: `gfp` itself, or,
/// for a sleeping allocation made where sleeping is not allowed, `gfp`
/// without __GFP_DIRECT_RECLAIM, so that it goes on as an atomic one and
/// never sleeps.
#[track_caller]
#[inline]
pub fn might_alloc_gfp(gfp: Gfp) -> Gfp {
    if lockdep::mode() != lockdep::LockdepMode::Off {
        fs_reclaim_acquire(gfp);
        fs_reclaim_release(gfp);
    }
    if gfp.allows_blocking() && !task::might_sleep() {
        return gfp - Gfp::__GFP_DIRECT_RECLAIM;
    }
    gfp
}

/// RAII form of [`fs_reclaim_acquire`] / [`fs_reclaim_release`] for reclaim
/// code. It releases exactly what it acquired, even if the task's flags
/// changed in between (Linux re-evaluates them on release).
#[must_use = "the reclaim section ends as soon as the guard is dropped"]
pub struct FsReclaimGuard {
    acquired: bool,
    /// Released by the task that acquired it.
    _not_send: PhantomData<*const ()>,
}

impl FsReclaimGuard {
    /// Enters a reclaim section for an allocation with `gfp`; fs_reclaim is
    /// acquired only when `gfp` allows fs reclaim.
    #[track_caller]
    pub fn new(gfp: Gfp) -> Self {
        let acquired = takes_fs_reclaim(gfp);
        if acquired {
            lockdep::lock_acquire(
                &FS_RECLAIM_MAP,
                instance(),
                Acquire::EXCLUSIVE,
                Location::caller(),
            );
        }
        Self {
            acquired,
            _not_send: PhantomData,
        }
    }

    /// The section of a reclaimer itself (kswapd): takes `fs_reclaim`
    /// whatever the task flags say, like Linux's `__fs_reclaim_acquire` in
    /// `balance_pgdat`, so locks its shrinkers take are ordered after it.
    #[track_caller]
    pub fn reclaimer() -> Self {
        let on = lockdep::mode() != lockdep::LockdepMode::Off;
        if on {
            lockdep::lock_acquire(
                &FS_RECLAIM_MAP,
                instance(),
                Acquire::EXCLUSIVE,
                Location::caller(),
            );
        }
        Self {
            acquired: on,
            _not_send: PhantomData,
        }
    }

    /// Whether the section took `fs_reclaim`.
    pub fn acquired(&self) -> bool {
        self.acquired
    }
}

impl Drop for FsReclaimGuard {
    #[track_caller]
    fn drop(&mut self) {
        if self.acquired {
            lockdep::lock_release(&FS_RECLAIM_MAP, instance(), Location::caller());
        }
    }
}
