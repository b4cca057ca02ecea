//! Reclaim policies: how the filesystem allocates under its inode lock and
//! how its reclaim paths lock inodes. A policy is a value (`policy=` on the
//! command line), not a build option, so experiments compare them in one run.
//!
//! The five policies replay the history of the seed mail (docs/seed.md):
//!
//! | policy | allocations under ILOCK | transactions | reclaim / cluster flush takes ILOCK |
//! |---|---|---|---|
//! | `nofs` | GFP_NOFS everywhere (legacy) | - | blocking, unreferenced inodes only |
//! | `kernel` | GFP_KERNEL | - | blocking, unreferenced inodes only |
//! | `nolockdep` | GFP_KERNEL \| __GFP_NOLOCKDEP | - | blocking, unreferenced inodes only |
//! | `trylock` (default) | GFP_KERNEL | scoped NOFS (`memalloc_nofs_save`) | trylock only |
//! | `broken` | GFP_KERNEL | scoped NOFS | blocking, and on *referenced* inodes too |
//!
//! `kernel` shows the seed's false positive: lockdep sees ILOCK -> fs_reclaim
//! (readdir allocating under ILOCK) and fs_reclaim -> ILOCK (reclaim locking
//! an unreferenced inode) for one lock class, though no inode is ever locked
//! both above and below reclaim. `broken` is a real bug: reclaim blocks on
//! inodes that tasks above reclaim hold, so a real deadlock can happen.

use crate::mm::gfp::{GFP_KERNEL, GFP_NOFS, Gfp};
use core::fmt;

/// How a reclaim-side path acquires an inode's ILOCK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IlockMode {
    /// `xfs_ilock_nowait`: skip (requeue) the inode if the lock is busy.
    Trylock,
    /// `xfs_ilock`: sleep until the lock is free.
    Blocking,
}

/// A reclaim policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Short name, as looked up by [`Policy::by_name`].
    pub name: &'static str,
    /// GFP used by filesystem operations for allocations made while they
    /// hold an ILOCK (buffers, inodes, directory work).
    pub gfp_under_ilock: Gfp,
    /// Transactions run inside a `memalloc_nofs_save` scope.
    pub scoped_nofs_transactions: bool,
    /// How the inode shrinker locks the unreferenced inodes it reclaims.
    pub reclaim_ilock: IlockMode,
    /// How inode cluster flushing locks the other inodes of a cluster.
    pub cluster_ilock: IlockMode,
    /// The deliberate bug: reclaim flushes the whole cluster of a dirty
    /// inode itself, locking referenced neighbours with blocking locks.
    pub reclaim_flushes_referenced: bool,
}

impl Policy {
    /// Legacy XFS: GFP_NOFS for every filesystem allocation.
    pub const NOFS: Policy = Policy {
        name: "nofs",
        gfp_under_ilock: GFP_NOFS,
        scoped_nofs_transactions: false,
        reclaim_ilock: IlockMode::Blocking,
        cluster_ilock: IlockMode::Trylock,
        reclaim_flushes_referenced: false,
    };
    /// GFP_KERNEL under ILOCK and blocking ILOCK in reclaim: the seed's
    /// lockdep false positive.
    pub const KERNEL: Policy = Policy {
        name: "kernel",
        gfp_under_ilock: GFP_KERNEL,
        scoped_nofs_transactions: false,
        reclaim_ilock: IlockMode::Blocking,
        cluster_ilock: IlockMode::Trylock,
        reclaim_flushes_referenced: false,
    };
    /// As `kernel`, but allocations under ILOCK carry __GFP_NOLOCKDEP.
    pub const NOLOCKDEP: Policy = Policy {
        name: "nolockdep",
        gfp_under_ilock: GFP_KERNEL.union(Gfp::__GFP_NOLOCKDEP),
        scoped_nofs_transactions: false,
        reclaim_ilock: IlockMode::Blocking,
        cluster_ilock: IlockMode::Trylock,
        reclaim_flushes_referenced: false,
    };
    /// Today's XFS: scoped NOFS in transactions, trylocks only in reclaim.
    pub const TRYLOCK: Policy = Policy {
        name: "trylock",
        gfp_under_ilock: GFP_KERNEL,
        scoped_nofs_transactions: true,
        reclaim_ilock: IlockMode::Trylock,
        cluster_ilock: IlockMode::Trylock,
        reclaim_flushes_referenced: false,
    };
    /// A deliberate bug: reclaim and cluster flushing block on the ILOCK of
    /// referenced inodes, so a real deadlock is possible.
    pub const BROKEN: Policy = Policy {
        name: "broken",
        gfp_under_ilock: GFP_KERNEL,
        scoped_nofs_transactions: true,
        reclaim_ilock: IlockMode::Blocking,
        cluster_ilock: IlockMode::Blocking,
        reclaim_flushes_referenced: true,
    };

    /// Every policy, in the order `policy=all` runs them.
    pub const ALL: [Policy; 5] = [
        Policy::NOFS,
        Policy::KERNEL,
        Policy::NOLOCKDEP,
        Policy::TRYLOCK,
        Policy::BROKEN,
    ];

    /// The default policy.
    pub const DEFAULT: Policy = Policy::TRYLOCK;

    /// The policy in [`Policy::ALL`] called `name`, if any.
    pub fn by_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name == name)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::DEFAULT
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}
