//! Reclaim policies: XFS's eras, each a named set of knobs. A policy is a
//! value (`policy=` on the command line), not a build option, so experiments
//! compare eras in one run, and every knob can be overridden on the command
//! line (`policy=today reclaim_final_lock=off`) so that an experiment needs
//! no new kernel binary.
//!
//! The eras replay the history of the seed mail (docs/seed.md):
//!
//! | era | `ilock_gfp` | `buf_gfp` | `inode_gfp` | `trans_nofs` | `reclaim_ilock` | `reclaim_final_lock` | `reclaim_writeback` | `reclaim_pinned` | `cluster_ilock` | `reclaim_referenced` |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | `nofs` | nofs | nofs | kernel | on | blocking | off | sync | wait | trylock | off |
//! | `kernel` | kernel | kernel | kernel | on | blocking | off | sync | wait | trylock | off |
//! | `nolockdep` | kernel+nolockdep | kernel+nolockdep | kernel | on | blocking | off | sync | wait | trylock | off |
//! | `trylock` | kernel | kernel | kernel | on | trylock | off | none | skip | trylock | off |
//! | `today` (default) | kernel+nolockdep | kernel+nolockdep | kernel | on | trylock | on | none | skip | trylock | off |
//! | `broken` | kernel+nolockdep | kernel+nolockdep | kernel | on | trylock | on | none | skip | blocking | on |
//!
//! - `nofs`: XFS before the scoped API (KM_NOFS on the filesystem's
//!   allocations, `PF_FSTRANS` in transactions); the in-core inode of an
//!   inode-cache miss was `kmem_zone_alloc(xfs_inode_zone, KM_SLEEP)`
//!   (`xfs_inode_alloc`), GFP_KERNEL outside a transaction (`inode_gfp`),
//!   so a lookup's reclaim could enter the filesystem; reclaim takes
//!   ILOCK blocking, waits for the flush lock, waits for pinned inodes by
//!   forcing the log (`xfs_iunpin_wait`) and writes dirty inodes back
//!   synchronously (the old `SYNC_WAIT` path of `xfs_reclaim_inode`).
//! - `kernel`: the seed's situation: GFP_KERNEL under ILOCK in read-only
//!   paths such as readdir, reclaim as in `nofs`. Transactions were already
//!   NOFS (`PF_FSTRANS`, then `memalloc_nofs_save` from 4.12), so the
//!   GFP_KERNEL allocations that matter are those outside transactions. Lockdep sees ILOCK ->
//!   fs_reclaim and fs_reclaim -> ILOCK for one class: the false positive.
//! - `nolockdep`: `kernel` with `__GFP_NOLOCKDEP` on allocations under ILOCK.
//! - `trylock`: what the seed announces (5.9's "make inode reclaim fully
//!   asynchronous"): trylocks only in reclaim, no writeback from reclaim,
//!   pinned inodes requeued instead of waited for, scoped NOFS
//!   transactions.
//! - `today`: what XFS shipped from 5.9 on: `trylock`, plus the blocking
//!   "(almost) spurious" `xfs_ilock(ip, XFS_ILOCK_EXCL)` that
//!   `xfs_reclaim_inode` takes after removing the inode from the index
//!   (fs_reclaim -> ILOCK again), plus `GFP_KERNEL | __GFP_NOLOCKDEP` on
//!   buffer and other allocations under ILOCK (`xfs_buf_alloc`, 2024),
//!   which is what keeps lockdep quiet.
//! - `broken`: `today` with a deliberate bug: reclaim flushes the whole
//!   cluster of a dirty inode, blocking on the ILOCKs of *referenced*
//!   neighbours, so a real deadlock can happen.
//!
//! `reclaim_subclass` is not XFS: it annotates reclaim's blocking ILOCK
//! with a lockdep subclass (`ILOCK_RECLAIM`) when the reclaiming task
//! already holds an ILOCK, which hides the "recursive locking" report that
//! Linux's lockdep would print for it. Off in every era.

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

/// What inode reclaim does with a dirty candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimWriteback {
    /// Before 5.9 (`SYNC_WAIT`): wait for the flush lock, write the
    /// inode's cluster back and wait for the IO, then free the inode.
    Sync,
    /// Since 5.9: requeue it and leave the writeback to the flusher (AIL).
    None,
}

/// What inode reclaim does with a candidate pinned in the log (logged by
/// a transaction whose checkpoint is not on disk yet; see `fs::log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimPinned {
    /// Before 5.9 (`SYNC_WAIT`): `xfs_iunpin_wait`, which forces the log
    /// up to the inode's last commit and sleeps until the checkpoint write
    /// completes.
    Wait,
    /// Since 5.9: requeue it (`if (xfs_ipincount(ip)) goto
    /// out_clear_flush`); the AIL forces the log in the background.
    Skip,
}

/// A reclaim policy: an era's name and its knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The era's name, as looked up by [`Policy::by_name`] (knob overrides
    /// keep it; [`Policy::knobs`] prints the resolved values).
    pub name: &'static str,
    /// GFP of allocations made while an ILOCK is held outside transactions
    /// (inodes, directory work), knob `ilock_gfp`.
    pub gfp_under_ilock: Gfp,
    /// GFP of buffer allocations (`xfs_buf_alloc`: the buffer and its
    /// page), knob `buf_gfp`.
    pub buf_gfp: Gfp,
    /// GFP of the in-core inode allocated on an inode-cache miss
    /// (`xfs_inode_alloc` in `xfs_iget`), knob `inode_gfp`. XFS allocated
    /// it with `KM_SLEEP` (GFP_KERNEL, NOFS only inside a transaction's
    /// `PF_FSTRANS`) in every era; `GFP_KERNEL | __GFP_NOFAIL` since 2020.
    /// A transaction's scope (`trans_nofs`) still strips __GFP_FS.
    pub inode_gfp: Gfp,
    /// Transactions run inside a `memalloc_nofs_save` scope (`trans_nofs`).
    pub scoped_nofs_transactions: bool,
    /// How the inode shrinker locks the unreferenced inodes it reclaims
    /// (`reclaim_ilock`).
    pub reclaim_ilock: IlockMode,
    /// The blocking ILOCK reclaim takes after unindexing an inode, before
    /// freeing it (`reclaim_final_lock`).
    pub reclaim_final_lock: bool,
    /// What reclaim does with dirty inodes (`reclaim_writeback`).
    pub reclaim_writeback: ReclaimWriteback,
    /// What reclaim does with inodes pinned in the log (`reclaim_pinned`).
    pub reclaim_pinned: ReclaimPinned,
    /// How inode cluster flushing locks the other inodes of a cluster
    /// (`cluster_ilock`).
    pub cluster_ilock: IlockMode,
    /// The deliberate bug: reclaim flushes the whole cluster of a dirty
    /// inode itself, locking referenced neighbours with blocking locks
    /// (`reclaim_referenced`).
    pub reclaim_flushes_referenced: bool,
    /// Not XFS: reclaim's blocking ILOCK uses the `ILOCK_RECLAIM` lockdep
    /// subclass when the task already holds an ILOCK (`reclaim_subclass`).
    pub reclaim_subclass: bool,
}

const KERNEL_NOLOCKDEP: Gfp = GFP_KERNEL.union(Gfp::__GFP_NOLOCKDEP);

impl Policy {
    /// XFS before the scoped API: GFP_NOFS for every filesystem allocation;
    /// reclaim locks blocking and writes dirty inodes back synchronously.
    pub const NOFS: Policy = Policy {
        name: "nofs",
        gfp_under_ilock: GFP_NOFS,
        buf_gfp: GFP_NOFS,
        inode_gfp: GFP_KERNEL,
        scoped_nofs_transactions: true,
        reclaim_ilock: IlockMode::Blocking,
        reclaim_final_lock: false,
        reclaim_writeback: ReclaimWriteback::Sync,
        reclaim_pinned: ReclaimPinned::Wait,
        cluster_ilock: IlockMode::Trylock,
        reclaim_flushes_referenced: false,
        reclaim_subclass: false,
    };
    /// GFP_KERNEL under ILOCK, reclaim as in `nofs`: the seed's lockdep
    /// false positive.
    pub const KERNEL: Policy = Policy {
        name: "kernel",
        gfp_under_ilock: GFP_KERNEL,
        buf_gfp: GFP_KERNEL,
        scoped_nofs_transactions: true,
        ..Policy::NOFS
    };
    /// As `kernel`, but allocations under ILOCK carry __GFP_NOLOCKDEP.
    pub const NOLOCKDEP: Policy = Policy {
        name: "nolockdep",
        gfp_under_ilock: KERNEL_NOLOCKDEP,
        buf_gfp: KERNEL_NOLOCKDEP,
        scoped_nofs_transactions: true,
        ..Policy::NOFS
    };
    /// What the seed announces: scoped NOFS in transactions, trylocks only
    /// in reclaim, no writeback from reclaim.
    pub const TRYLOCK: Policy = Policy {
        name: "trylock",
        gfp_under_ilock: GFP_KERNEL,
        buf_gfp: GFP_KERNEL,
        inode_gfp: GFP_KERNEL,
        scoped_nofs_transactions: true,
        reclaim_ilock: IlockMode::Trylock,
        reclaim_final_lock: false,
        reclaim_writeback: ReclaimWriteback::None,
        reclaim_pinned: ReclaimPinned::Skip,
        cluster_ilock: IlockMode::Trylock,
        reclaim_flushes_referenced: false,
        reclaim_subclass: false,
    };
    /// XFS from 5.9 on: `trylock` plus the final blocking ILOCK and
    /// `GFP_KERNEL | __GFP_NOLOCKDEP` under ILOCK.
    pub const TODAY: Policy = Policy {
        name: "today",
        gfp_under_ilock: KERNEL_NOLOCKDEP,
        buf_gfp: KERNEL_NOLOCKDEP,
        reclaim_final_lock: true,
        ..Policy::TRYLOCK
    };
    /// A deliberate bug on top of `today`: reclaim and cluster flushing
    /// block on the ILOCK of referenced inodes, so a real deadlock is
    /// possible.
    pub const BROKEN: Policy = Policy {
        name: "broken",
        cluster_ilock: IlockMode::Blocking,
        reclaim_flushes_referenced: true,
        ..Policy::TODAY
    };

    /// Every era, in the order `policy=all` runs them.
    pub const ALL: [Policy; 6] = [
        Policy::NOFS,
        Policy::KERNEL,
        Policy::NOLOCKDEP,
        Policy::TRYLOCK,
        Policy::TODAY,
        Policy::BROKEN,
    ];

    /// The default policy.
    pub const DEFAULT: Policy = Policy::TODAY;

    /// The era in [`Policy::ALL`] called `name`, if any.
    pub fn by_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name == name)
    }

    /// Sets knob `name` to `value` (as on the command line). An unknown
    /// knob or value is an error naming the valid ones.
    pub fn set_knob(&mut self, name: &str, value: &str) -> Result<(), KnobError> {
        let knob = knob(name).ok_or(KnobError::UnknownKnob)?;
        (knob.set)(self, value).map_err(|()| KnobError::BadValue(knob))
    }

    /// The resolved knobs, `name=value` separated by spaces.
    pub fn knobs(&self) -> KnobsDisplay {
        KnobsDisplay(*self)
    }

    /// Whether this policy carries the deliberate deadlock bug (a run may
    /// then end with deadlocked tasks).
    pub fn is_broken(&self) -> bool {
        self.reclaim_flushes_referenced
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

/// Why [`Policy::set_knob`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnobError {
    /// No knob of that name.
    UnknownKnob,
    /// The knob exists but does not take the value.
    BadValue(&'static Knob),
}

/// One knob: its command-line name, the values it takes, and how to set
/// and read it.
#[derive(Debug)]
pub struct Knob {
    /// The key, as written before `=`.
    pub name: &'static str,
    /// The values it takes, `|`-separated.
    pub values: &'static str,
    /// One line of help.
    pub help: &'static str,
    set: fn(&mut Policy, &str) -> Result<(), ()>,
    get: fn(&Policy) -> &'static str,
}

fn gfp_parse(v: &str) -> Result<Gfp, ()> {
    match v {
        "kernel" => Ok(GFP_KERNEL),
        "nofs" => Ok(GFP_NOFS),
        "kernel+nolockdep" => Ok(KERNEL_NOLOCKDEP),
        _ => Err(()),
    }
}

fn gfp_name(g: Gfp) -> &'static str {
    if g == GFP_NOFS {
        "nofs"
    } else if g == KERNEL_NOLOCKDEP {
        "kernel+nolockdep"
    } else if g == GFP_KERNEL {
        "kernel"
    } else {
        "other"
    }
}

fn onoff(v: &str) -> Result<bool, ()> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(()),
    }
}

fn onoff_name(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn mode(v: &str) -> Result<IlockMode, ()> {
    match v {
        "trylock" => Ok(IlockMode::Trylock),
        "blocking" => Ok(IlockMode::Blocking),
        _ => Err(()),
    }
}

fn mode_name(m: IlockMode) -> &'static str {
    match m {
        IlockMode::Trylock => "trylock",
        IlockMode::Blocking => "blocking",
    }
}

/// Every knob, in the order the report prints them.
pub static KNOBS: &[Knob] = &[
    Knob {
        name: "ilock_gfp",
        values: "kernel|nofs|kernel+nolockdep",
        help: "GFP of allocations under ILOCK outside transactions (inodes, directory work)",
        set: |p, v| {
            p.gfp_under_ilock = gfp_parse(v)?;
            Ok(())
        },
        get: |p| gfp_name(p.gfp_under_ilock),
    },
    Knob {
        name: "buf_gfp",
        values: "kernel|nofs|kernel+nolockdep",
        help: "GFP of buffer allocations (xfs_buf_alloc)",
        set: |p, v| {
            p.buf_gfp = gfp_parse(v)?;
            Ok(())
        },
        get: |p| gfp_name(p.buf_gfp),
    },
    Knob {
        name: "inode_gfp",
        values: "kernel|nofs|kernel+nolockdep",
        help: "GFP of the in-core inode on an inode-cache miss (xfs_inode_alloc, KM_SLEEP)",
        set: |p, v| {
            p.inode_gfp = gfp_parse(v)?;
            Ok(())
        },
        get: |p| gfp_name(p.inode_gfp),
    },
    Knob {
        name: "trans_nofs",
        values: "on|off",
        help: "transactions run in a memalloc_nofs_save scope",
        set: |p, v| {
            p.scoped_nofs_transactions = onoff(v)?;
            Ok(())
        },
        get: |p| onoff_name(p.scoped_nofs_transactions),
    },
    Knob {
        name: "reclaim_ilock",
        values: "trylock|blocking",
        help: "how inode reclaim locks its candidate",
        set: |p, v| {
            p.reclaim_ilock = mode(v)?;
            Ok(())
        },
        get: |p| mode_name(p.reclaim_ilock),
    },
    Knob {
        name: "reclaim_final_lock",
        values: "on|off",
        help: "blocking ILOCK after unindexing an inode, before freeing it (XFS since 5.9)",
        set: |p, v| {
            p.reclaim_final_lock = onoff(v)?;
            Ok(())
        },
        get: |p| onoff_name(p.reclaim_final_lock),
    },
    Knob {
        name: "reclaim_writeback",
        values: "sync|none",
        help: "reclaim writes dirty inodes back and waits (before 5.9), or requeues them",
        set: |p, v| {
            p.reclaim_writeback = match v {
                "sync" => ReclaimWriteback::Sync,
                "none" => ReclaimWriteback::None,
                _ => return Err(()),
            };
            Ok(())
        },
        get: |p| match p.reclaim_writeback {
            ReclaimWriteback::Sync => "sync",
            ReclaimWriteback::None => "none",
        },
    },
    Knob {
        name: "reclaim_pinned",
        values: "wait|skip",
        help: "reclaim forces the log and waits for a pinned inode (before 5.9), or requeues it",
        set: |p, v| {
            p.reclaim_pinned = match v {
                "wait" => ReclaimPinned::Wait,
                "skip" => ReclaimPinned::Skip,
                _ => return Err(()),
            };
            Ok(())
        },
        get: |p| match p.reclaim_pinned {
            ReclaimPinned::Wait => "wait",
            ReclaimPinned::Skip => "skip",
        },
    },
    Knob {
        name: "cluster_ilock",
        values: "trylock|blocking",
        help: "how cluster flushing locks the other inodes of a cluster",
        set: |p, v| {
            p.cluster_ilock = mode(v)?;
            Ok(())
        },
        get: |p| mode_name(p.cluster_ilock),
    },
    Knob {
        name: "reclaim_referenced",
        values: "on|off",
        help: "the deliberate bug: reclaim flushes clusters, blocking on referenced inodes",
        set: |p, v| {
            p.reclaim_flushes_referenced = onoff(v)?;
            Ok(())
        },
        get: |p| onoff_name(p.reclaim_flushes_referenced),
    },
    Knob {
        name: "reclaim_subclass",
        values: "on|off",
        help: "not XFS: lockdep subclass ILOCK_RECLAIM on reclaim's blocking ILOCK",
        set: |p, v| {
            p.reclaim_subclass = onoff(v)?;
            Ok(())
        },
        get: |p| onoff_name(p.reclaim_subclass),
    },
];

/// The knob called `name`.
pub fn knob(name: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.name == name)
}

impl PartialEq for Knob {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Knob {}

impl Knob {
    /// The knob's value in `p`, as the command line writes it.
    pub fn get(&self, p: &Policy) -> &'static str {
        (self.get)(p)
    }
}

/// [`Policy::knobs`]: `ilock_gfp=kernel buf_gfp=kernel ...`.
pub struct KnobsDisplay(Policy);

impl fmt::Display for KnobsDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in KNOBS.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", k.name, k.get(&self.0))?;
        }
        Ok(())
    }
}
