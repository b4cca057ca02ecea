//! GFP flags, per-task PF_* flags and the scoped allocation API.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use kreclaim::harness::TestResult;
use kreclaim::mm::gfp::*;
use kreclaim::mm::scope::*;
use kreclaim::task::{self, TaskFlags};
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    gfp_values_match_linux,
    gfp_prints_by_name,
    nofs_scope_sets_and_restores,
    nested_scopes_restore_lifo,
    inner_scope_of_same_kind_changes_nothing,
    raii_guards_restore_on_drop,
    out_of_order_restore_is_reported,
    current_gfp_context_matches_linux_for_every_combination,
    scope_is_per_task,
    deep_nesting_is_never_misreported,
    out_of_order_restore_deep_in_the_nesting_is_reported_once,
    scope_restored_twice_is_reported_and_changes_nothing,
    scope_restored_on_another_task_is_reported_and_changes_nothing,
);

fn gfp_values_match_linux() -> TestResult {
    kassert_eq!(GFP_KERNEL.bits(), 0xcc0);
    kassert_eq!(GFP_NOFS.bits(), 0xc40);
    kassert_eq!(GFP_NOIO.bits(), 0xc00);
    kassert_eq!(GFP_ATOMIC.bits(), 0x820);
    kassert_eq!(GFP_NOWAIT.bits(), 0x2800, "KSWAPD_RECLAIM | NOWARN");
    kassert_eq!(GFP_USER.bits(), 0x100cc0);
    // As 4.x and 5.x define them (newer trees add KASAN-skip bits).
    kassert_eq!(GFP_HIGHUSER.bits(), 0x100cc2);
    kassert_eq!(GFP_HIGHUSER_MOVABLE.bits(), 0x100cca);
    kassert_eq!(Gfp::__GFP_NOFAIL.bits(), 0x8000);
    kassert_eq!(Gfp::__GFP_NORETRY.bits(), 0x10000);
    kassert_eq!(Gfp::__GFP_RETRY_MAYFAIL.bits(), 0x4000);
    kassert_eq!(Gfp::__GFP_NOLOCKDEP.bits(), 0x4000000);
    kassert_eq!(Gfp::__GFP_ZERO.bits(), 0x100);
    kassert!(GFP_KERNEL.allows_blocking() && !GFP_ATOMIC.allows_blocking());
    kassert_eq!(TaskFlags::PF_MEMALLOC.bits(), 0x800);
    kassert_eq!(TaskFlags::PF_MEMALLOC_NOFS.bits(), 0x40000);
    kassert_eq!(TaskFlags::PF_MEMALLOC_NOIO.bits(), 0x80000);
    kassert_eq!(TaskFlags::PF_KSWAPD.bits(), 0x20000);
    Ok(())
}

fn gfp_prints_by_name() -> TestResult {
    kassert_eq!(
        format!("{}", GFP_NOFS | Gfp::__GFP_ZERO),
        "GFP_NOFS|__GFP_ZERO"
    );
    kassert_eq!(format!("{}", GFP_KERNEL), "GFP_KERNEL");
    kassert_eq!(
        format!("{}", GFP_ATOMIC | Gfp::__GFP_NOWARN),
        "GFP_ATOMIC|__GFP_NOWARN"
    );
    kassert_eq!(format!("{}", GFP_USER), "GFP_USER");
    kassert_eq!(format!("{}", GFP_HIGHUSER), "GFP_HIGHUSER");
    kassert_eq!(
        format!("{}", GFP_HIGHUSER_MOVABLE | Gfp::__GFP_ZERO),
        "GFP_HIGHUSER_MOVABLE|__GFP_ZERO"
    );
    kassert_eq!(
        format!("{}", Gfp::__GFP_FS | Gfp::__GFP_IO),
        "__GFP_IO|__GFP_FS"
    );
    kassert_eq!(format!("{}", Gfp::empty()), "0");
    kassert_eq!(
        format!("{}", GFP_KERNEL | Gfp::__GFP_NOLOCKDEP),
        "GFP_KERNEL|__GFP_NOLOCKDEP"
    );
    Ok(())
}

fn flags() -> TaskFlags {
    task::current().flags()
}

fn nofs_scope_sets_and_restores() -> TestResult {
    kassert!(!flags().contains(TaskFlags::PF_MEMALLOC_NOFS));
    let s = memalloc_nofs_save();
    kassert!(flags().contains(TaskFlags::PF_MEMALLOC_NOFS));
    kassert_eq!(current_gfp_context(GFP_KERNEL), GFP_NOFS);
    memalloc_nofs_restore(s);
    kassert!(!flags().contains(TaskFlags::PF_MEMALLOC_NOFS));
    kassert_eq!(current_gfp_context(GFP_KERNEL), GFP_KERNEL);
    Ok(())
}

fn nested_scopes_restore_lifo() -> TestResult {
    let a = memalloc_nofs_save();
    let b = memalloc_noio_save();
    kassert_eq!(current_gfp_context(GFP_KERNEL), GFP_NOIO);
    memalloc_noio_restore(b);
    kassert!(
        flags().contains(TaskFlags::PF_MEMALLOC_NOFS),
        "inner restore cleared the outer scope"
    );
    kassert!(!flags().contains(TaskFlags::PF_MEMALLOC_NOIO));
    kassert_eq!(current_gfp_context(GFP_KERNEL), GFP_NOFS);
    memalloc_nofs_restore(a);
    kassert_eq!(current_gfp_context(GFP_KERNEL), GFP_KERNEL);
    Ok(())
}

fn inner_scope_of_same_kind_changes_nothing() -> TestResult {
    let outer = memalloc_nofs_save();
    let inner = memalloc_nofs_save();
    kassert!(
        inner.newly_set().is_empty(),
        "a nested NOFS save must not claim the bit"
    );
    memalloc_nofs_restore(inner);
    kassert!(
        flags().contains(TaskFlags::PF_MEMALLOC_NOFS),
        "inner restore ended the outer scope"
    );
    memalloc_nofs_restore(outer);
    kassert!(!flags().contains(TaskFlags::PF_MEMALLOC_NOFS));
    Ok(())
}

fn raii_guards_restore_on_drop() -> TestResult {
    {
        let _nofs = MemallocScope::nofs();
        {
            let _noreclaim = MemallocScope::noreclaim();
            kassert!(flags().contains(TaskFlags::PF_MEMALLOC | TaskFlags::PF_MEMALLOC_NOFS));
        }
        kassert!(!flags().contains(TaskFlags::PF_MEMALLOC));
        kassert!(flags().contains(TaskFlags::PF_MEMALLOC_NOFS));
    }
    kassert!(flags().is_empty(), "flags left behind: {:?}", flags());
    Ok(())
}

fn out_of_order_restore_is_reported() -> TestResult {
    let before = out_of_order_restores();
    let a = memalloc_nofs_save();
    let b = memalloc_noio_save();
    memalloc_nofs_restore(a); // wrong: b is innermost
    kassert_eq!(out_of_order_restores(), before + 1);
    memalloc_noio_restore(b);
    kassert!(flags().is_empty(), "flags left behind: {:?}", flags());
    // A correct LIFO sequence reports nothing.
    let a = memalloc_nofs_save();
    let b = memalloc_noio_save();
    memalloc_noio_restore(b);
    memalloc_nofs_restore(a);
    kassert_eq!(out_of_order_restores(), before + 1);
    Ok(())
}

fn current_gfp_context_matches_linux_for_every_combination() -> TestResult {
    let io_fs = Gfp::__GFP_IO | Gfp::__GFP_FS;
    for nofs in [false, true] {
        for noio in [false, true] {
            for pin in [false, true] {
                let mut f = TaskFlags::empty();
                f.set(TaskFlags::PF_MEMALLOC_NOFS, nofs);
                f.set(TaskFlags::PF_MEMALLOC_NOIO, noio);
                f.set(TaskFlags::PF_MEMALLOC_PIN, pin);
                for gfp in [
                    GFP_KERNEL,
                    GFP_NOFS,
                    GFP_NOIO,
                    GFP_ATOMIC,
                    GFP_KERNEL | Gfp::__GFP_MOVABLE,
                ] {
                    // Linux: NOIO clears IO|FS (and wins over NOFS); NOFS clears FS; PIN clears MOVABLE.
                    let mut want = gfp;
                    if noio {
                        want.remove(io_fs);
                    } else if nofs {
                        want.remove(Gfp::__GFP_FS);
                    }
                    if pin {
                        want.remove(Gfp::__GFP_MOVABLE);
                    }
                    kassert_eq!(gfp_context_for(f, gfp), want, "flags {f:?} gfp {gfp}");
                }
            }
        }
    }
    // And through the real task flags.
    let _noio = MemallocScope::noio();
    let _nofs = MemallocScope::nofs();
    kassert_eq!(current_gfp_context(GFP_KERNEL), GFP_NOIO);
    Ok(())
}

fn scope_is_per_task() -> TestResult {
    let _nofs = MemallocScope::nofs();
    let seen = alloc::sync::Arc::new(spin::Mutex::new(Gfp::empty()));
    let s = seen.clone();
    task::spawn("other", move || *s.lock() = current_gfp_context(GFP_KERNEL))
        .unwrap()
        .join()
        .unwrap();
    kassert_eq!(
        *seen.lock(),
        GFP_KERNEL,
        "another task inherited our NOFS scope"
    );
    kassert_eq!(current_gfp_context(GFP_KERNEL), GFP_NOFS);
    Ok(())
}

/// Opens `depth` scopes (alternating NOFS and NOIO), checks the flags at
/// the bottom, and closes them in LIFO order.
fn nest(depth: usize) -> TestResult {
    if depth == 0 {
        kassert!(flags().contains(TaskFlags::PF_MEMALLOC_NOFS | TaskFlags::PF_MEMALLOC_NOIO));
        return Ok(());
    }
    let s = if depth.is_multiple_of(2) {
        memalloc_nofs_save()
    } else {
        memalloc_noio_save()
    };
    let r = nest(depth - 1);
    memalloc_nofs_restore(s);
    r
}

fn deep_nesting_is_never_misreported() -> TestResult {
    let before = out_of_order_restores();
    let doubles = double_restores();
    for depth in [31, 32, 33, 40, 100, 300] {
        nest(depth)?;
        kassert_eq!(out_of_order_restores(), before, "depth {depth}");
        kassert_eq!(double_restores(), doubles, "depth {depth}");
        kassert!(
            flags().is_empty(),
            "depth {depth}: flags left behind: {:?}",
            flags()
        );
    }
    // RAII guards, 40 deep.
    {
        let mut guards = alloc::vec::Vec::with_capacity(40);
        for _ in 0..40 {
            guards.push(MemallocScope::nofs());
        }
        while guards.pop().is_some() {}
    }
    kassert_eq!(out_of_order_restores(), before);
    kassert!(flags().is_empty(), "flags left behind: {:?}", flags());
    Ok(())
}

fn out_of_order_restore_deep_in_the_nesting_is_reported_once() -> TestResult {
    for (depth, victim) in [(40, 35), (40, 10), (80, 70)] {
        let before = out_of_order_restores();
        let mut saved = alloc::vec::Vec::with_capacity(depth);
        for _ in 0..depth {
            saved.push(memalloc_nofs_save());
        }
        let bad = saved.remove(victim);
        memalloc_nofs_restore(bad);
        kassert_eq!(out_of_order_restores(), before + 1, "{depth}/{victim}");
        // The others close in LIFO order: no further report.
        while let Some(s) = saved.pop() {
            memalloc_nofs_restore(s);
        }
        kassert_eq!(
            out_of_order_restores(),
            before + 1,
            "{depth}/{victim}: false report"
        );
        kassert!(flags().is_empty(), "flags left behind: {:?}", flags());
        // And the task's nesting is sane again.
        let before = out_of_order_restores();
        nest(50)?;
        kassert_eq!(out_of_order_restores(), before, "{depth}/{victim}: after");
    }
    Ok(())
}

fn scope_restored_twice_is_reported_and_changes_nothing() -> TestResult {
    let before = double_restores();
    let ooo = out_of_order_restores();
    let a = memalloc_nofs_save();
    memalloc_nofs_restore(a);
    memalloc_nofs_restore(a);
    kassert_eq!(double_restores(), before + 1);
    // Restoring it again must not end a scope opened since.
    let b = memalloc_nofs_save();
    memalloc_nofs_restore(a);
    kassert_eq!(double_restores(), before + 2);
    kassert!(
        flags().contains(TaskFlags::PF_MEMALLOC_NOFS),
        "the newer scope was ended"
    );
    memalloc_nofs_restore(b);
    kassert!(flags().is_empty(), "flags left behind: {:?}", flags());
    // Deep in the nesting too.
    let mut saved = alloc::vec::Vec::with_capacity(60);
    for _ in 0..60 {
        saved.push(memalloc_noio_save());
    }
    let inner = saved.pop().unwrap();
    memalloc_noio_restore(inner);
    memalloc_noio_restore(inner);
    kassert_eq!(double_restores(), before + 3);
    while let Some(s) = saved.pop() {
        memalloc_noio_restore(s);
    }
    kassert_eq!(out_of_order_restores(), ooo, "misreported as out of order");
    kassert!(flags().is_empty(), "flags left behind: {:?}", flags());
    Ok(())
}

fn scope_restored_on_another_task_is_reported_and_changes_nothing() -> TestResult {
    let before = foreign_task_restores();
    let a = memalloc_nofs_save();
    let other_flags = alloc::sync::Arc::new(spin::Mutex::new(TaskFlags::empty()));
    let f = other_flags.clone();
    task::spawn("restorer", move || {
        let _inner = MemallocScope::noio();
        memalloc_nofs_restore(a);
        *f.lock() = task::current().flags();
    })
    .unwrap()
    .join()
    .unwrap();
    kassert_eq!(foreign_task_restores(), before + 1);
    kassert!(
        other_flags.lock().contains(TaskFlags::PF_MEMALLOC_NOIO),
        "the other task's scope was changed: {:?}",
        *other_flags.lock()
    );
    kassert!(
        flags().contains(TaskFlags::PF_MEMALLOC_NOFS),
        "our scope was ended"
    );
    memalloc_nofs_restore(a);
    kassert!(flags().is_empty(), "flags left behind: {:?}", flags());
    kassert_eq!(foreign_task_restores(), before + 1);
    Ok(())
}
