//! The scoped allocation API (`include/linux/sched/mm.h`): instead of passing
//! GFP_NOFS down every call chain, a section that must not recurse into the
//! filesystem marks the task, and every allocation inside it — including
//! ones made deep in library code through Rust's global allocator — loses
//! __GFP_FS in [`current_gfp_context`].
//!
//! Save/restore follow Linux's current `memalloc_flags_save`: save returns the
//! bits it newly set, restore clears exactly those, so LIFO nesting is safe.
//! In addition (checks Linux does not have) every task keeps track of its
//! open scopes, at any depth and without allocating, and a restore out of
//! LIFO order, a second restore of one scope, or a restore on another task
//! is reported; the last two change nothing.

use crate::mm::gfp::Gfp;
use crate::task::{self, ScopeClose, ScopeToken, TaskFlags, TaskId};
use core::panic::Location;
use core::sync::atomic::{AtomicUsize, Ordering};

/// What a `memalloc_*_save` call changed; hand it back to the matching restore.
#[must_use = "a memalloc scope must be restored"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemallocFlags {
    set: TaskFlags,
    scope: ScopeToken,
    task: TaskId,
    opened_at: &'static Location<'static>,
}

impl MemallocFlags {
    /// The task flags this save newly set (empty when already in such a scope).
    pub fn newly_set(&self) -> TaskFlags {
        self.set
    }
}

static OUT_OF_ORDER: AtomicUsize = AtomicUsize::new(0);
static DOUBLE_RESTORE: AtomicUsize = AtomicUsize::new(0);
static FOREIGN_RESTORE: AtomicUsize = AtomicUsize::new(0);

/// How many out-of-order restores have been reported since boot.
pub fn out_of_order_restores() -> usize {
    OUT_OF_ORDER.load(Ordering::Relaxed)
}

/// How many restores of a scope already restored have been reported.
pub fn double_restores() -> usize {
    DOUBLE_RESTORE.load(Ordering::Relaxed)
}

/// How many restores on a task other than the one that saved have been
/// reported.
pub fn foreign_task_restores() -> usize {
    FOREIGN_RESTORE.load(Ordering::Relaxed)
}

#[track_caller]
fn memalloc_flags_save(mask: TaskFlags) -> MemallocFlags {
    let t = task::current();
    let old = t.flags();
    let set = mask - old;
    t.set_flags(set);
    let scope = t.memalloc_scope_open();
    MemallocFlags {
        set,
        scope,
        task: t.id(),
        opened_at: Location::caller(),
    }
}

#[track_caller]
fn memalloc_flags_restore(saved: MemallocFlags) {
    let t = task::current();
    if saved.task != t.id() {
        // The flags belong to the saving task: clearing them here would
        // change this task's context. Reported, nothing changed.
        FOREIGN_RESTORE.fetch_add(1, Ordering::Relaxed);
        crate::println!(
            "WARNING: memalloc scope restored on the wrong task: task '{}' at {} restores the \
             scope #{} opened at {} by task id {}; ignored",
            t.name(),
            Location::caller(),
            saved.scope.serial,
            saved.opened_at,
            saved.task
        );
        return;
    }
    match t.memalloc_scope_close(saved.scope) {
        ScopeClose::InOrder => {}
        ScopeClose::OutOfOrder { innermost } => {
            OUT_OF_ORDER.fetch_add(1, Ordering::Relaxed);
            crate::println!(
                "WARNING: memalloc scope restored out of order by task '{}' at {}: the scope opened \
                 at {} (#{}) is closed while scope #{} is still open inside it",
                t.name(),
                Location::caller(),
                saved.opened_at,
                saved.scope.serial,
                innermost
            );
        }
        ScopeClose::NotOpen => {
            // Clearing the bits again could end a scope opened since.
            DOUBLE_RESTORE.fetch_add(1, Ordering::Relaxed);
            crate::println!(
                "WARNING: memalloc scope restored twice by task '{}' at {}: the scope opened at {} \
                 (#{}) was already restored; ignored",
                t.name(),
                Location::caller(),
                saved.opened_at,
                saved.scope.serial
            );
            return;
        }
    }
    t.clear_flags(saved.set);
}

/// Enters a NOFS scope: allocations lose __GFP_FS until the restore.
#[track_caller]
pub fn memalloc_nofs_save() -> MemallocFlags {
    memalloc_flags_save(TaskFlags::PF_MEMALLOC_NOFS)
}

/// Ends the scope [`memalloc_nofs_save`] began.
#[track_caller]
pub fn memalloc_nofs_restore(saved: MemallocFlags) {
    memalloc_flags_restore(saved)
}

/// Enters a NOIO scope: allocations lose __GFP_IO and __GFP_FS.
#[track_caller]
pub fn memalloc_noio_save() -> MemallocFlags {
    memalloc_flags_save(TaskFlags::PF_MEMALLOC_NOIO)
}

/// Ends the scope [`memalloc_noio_save`] began.
#[track_caller]
pub fn memalloc_noio_restore(saved: MemallocFlags) {
    memalloc_flags_restore(saved)
}

/// Marks the task as reclaiming (PF_MEMALLOC): no recursion into reclaim.
#[track_caller]
pub fn memalloc_noreclaim_save() -> MemallocFlags {
    memalloc_flags_save(TaskFlags::PF_MEMALLOC)
}

/// Ends the scope [`memalloc_noreclaim_save`] began.
#[track_caller]
pub fn memalloc_noreclaim_restore(saved: MemallocFlags) {
    memalloc_flags_restore(saved)
}

/// RAII form of the scoped API: the scope ends when the guard drops.
#[must_use = "the scope ends as soon as the guard is dropped"]
pub struct MemallocScope {
    saved: Option<MemallocFlags>,
}

impl MemallocScope {
    /// `memalloc_nofs_save()` until drop.
    #[track_caller]
    pub fn nofs() -> Self {
        Self {
            saved: Some(memalloc_nofs_save()),
        }
    }

    /// `memalloc_noio_save()` until drop.
    #[track_caller]
    pub fn noio() -> Self {
        Self {
            saved: Some(memalloc_noio_save()),
        }
    }

    /// `memalloc_noreclaim_save()` until drop.
    #[track_caller]
    pub fn noreclaim() -> Self {
        Self {
            saved: Some(memalloc_noreclaim_save()),
        }
    }
}

impl Drop for MemallocScope {
    #[track_caller]
    fn drop(&mut self) {
        if let Some(s) = self.saved.take() {
            memalloc_flags_restore(s);
        }
    }
}

/// Applies the task's scoped constraints to `gfp`, exactly as Linux: NOIO
/// clears __GFP_IO and __GFP_FS (and wins over NOFS); NOFS clears __GFP_FS;
/// PIN clears __GFP_MOVABLE.
#[inline]
pub fn current_gfp_context(gfp: Gfp) -> Gfp {
    gfp_context_for(task::current().flags(), gfp)
}

/// [`current_gfp_context`] for explicit task flags.
#[inline]
pub fn gfp_context_for(flags: TaskFlags, mut gfp: Gfp) -> Gfp {
    if flags.intersects(
        TaskFlags::PF_MEMALLOC_NOIO | TaskFlags::PF_MEMALLOC_NOFS | TaskFlags::PF_MEMALLOC_PIN,
    ) {
        if flags.contains(TaskFlags::PF_MEMALLOC_NOIO) {
            gfp.remove(Gfp::__GFP_IO | Gfp::__GFP_FS);
        } else if flags.contains(TaskFlags::PF_MEMALLOC_NOFS) {
            gfp.remove(Gfp::__GFP_FS);
        }
        if flags.contains(TaskFlags::PF_MEMALLOC_PIN) {
            gfp.remove(Gfp::__GFP_MOVABLE);
        }
    }
    gfp
}
