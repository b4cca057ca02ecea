//! Lockdep: lock-order cycles, recursion, unlock balance, locks held at exit,
//! and the fs_reclaim annotation replaying the seed (XFS ILOCK vs reclaim).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use kreclaim::harness::{TestFailure, TestResult};
use kreclaim::mm::fault_inject::FAILSLAB;
use kreclaim::mm::fs_reclaim::{FS_RECLAIM_MAP, FsReclaimGuard, might_alloc};
use kreclaim::mm::gfp::{GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, Gfp};
use kreclaim::mm::scope::MemallocScope;
use kreclaim::sync::lockdep::{
    self, LockClassKey, LockdepMap, LockdepMode, LockdepReport, ReportKind,
};
use kreclaim::sync::{Mutex, RwSemaphore, SpinLock};
use kreclaim::task::{self, JoinError, TaskState};
use kreclaim::{kassert, kassert_eq, lock_class};

kreclaim::kernel_tests!(
    inversion_across_two_tasks_is_reported,
    inversion_with_trylock_inside_is_not_reported,
    trylocked_lock_held_over_blocking_lock_records_an_edge,
    cycle_through_three_classes_is_reported_with_its_chain,
    each_cycle_is_reported_once_until_reset,
    recursive_locking_of_one_class_is_reported,
    nested_subclass_is_not_recursive,
    rwsem_read_recursion_is_reported,
    release_of_unheld_lock_is_reported,
    out_of_order_release_keeps_the_stack_balanced,
    downgrade_marks_the_held_lock_shared,
    seed_ilock_held_over_gfp_kernel_alloc_vs_reclaim_is_reported,
    seed_is_reported_whichever_path_runs_first,
    seed_gfp_nofs_alloc_is_not_reported,
    seed_alloc_in_nofs_scope_is_not_reported,
    seed_nolockdep_alloc_is_not_reported,
    seed_non_sleeping_alloc_records_no_edge,
    seed_trylock_in_reclaim_is_not_reported,
    seed_reclaimer_with_pf_memalloc_records_no_edge,
    lockdep_off_records_nothing,
    task_exiting_with_a_lock_held_is_reported,
    mutex_relock_by_owner_is_reported_and_parks_the_task,
    rwsem_write_relock_by_owner_is_reported_and_parks_the_task,
    rwsem_write_after_read_by_one_task_is_reported_and_parks_it,
    spinlock_relock_by_owner_is_reported_and_parks_the_task,
    report_under_failslab_is_printed_without_panicking,
    cached_chain_skips_validation,
    cached_chain_never_hides_a_new_order,
    chain_key_covers_prefix_subclass_and_trylock,
    reports_name_the_cpu,
);

static A: Mutex<()> = Mutex::new((), lock_class!("ld_a"));
static B: Mutex<()> = Mutex::new((), lock_class!("ld_b"));
static C: Mutex<()> = Mutex::new((), lock_class!("ld_c"));

/// Runs `f` in a task of its own and waits for it.
fn in_task(name: &'static str, f: impl FnOnce() + Send + 'static) -> TestResult {
    let h = task::spawn(name, f).map_err(|e| TestFailure::new(format!("spawn '{name}': {e:?}")))?;
    kassert!(
        h.join_timeout(Duration::from_secs(60)).is_ok(),
        "task '{name}' did not finish"
    );
    Ok(())
}

fn summary(r: &[LockdepReport]) -> Vec<(ReportKind, Vec<&'static str>)> {
    r.iter().map(|r| (r.kind, r.classes.clone())).collect()
}

/// The single report since `before`, which must be of `kind`.
fn one_report(before: usize, kind: ReportKind) -> Result<LockdepReport, TestFailure> {
    let r = lockdep::reports_since(before);
    kassert_eq!(r.len(), 1, "reports: {:?}", summary(&r));
    kassert_eq!(r[0].kind, kind);
    Ok(r[0].clone())
}

fn no_new_reports(before: usize) -> TestResult {
    let r = lockdep::reports_since(before);
    kassert!(r.is_empty(), "unexpected reports: {:?}", summary(&r));
    Ok(())
}

fn ab() {
    let _a = A.lock();
    let _b = B.lock();
}

fn ba() {
    let _b = B.lock();
    let _a = A.lock();
}

fn inversion_across_two_tasks_is_reported() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    in_task("ab", ab)?;
    no_new_reports(before)?;
    kassert!(lockdep::has_dependency(A.class(), B.class()));
    // Runs after "ab" finished: no deadlock can happen, lockdep predicts it.
    in_task("ba", ba)?;
    let r = one_report(before, ReportKind::CircularDependency)?;
    kassert_eq!(r.classes, alloc::vec!["ld_a", "ld_b"]);
    kassert_eq!(r.task.as_str(), "ba");
    for s in [
        "WARNING: possible circular locking dependency detected",
        "task 'ba' is trying to acquire lock:\n (ld_a)",
        "but task is already holding lock:\n (ld_b)",
        "first seen by task 'ab'",
        "*** DEADLOCK ***",
    ] {
        kassert!(r.text.contains(s), "no '{s}' in:{}", r.text);
    }
    Ok(())
}

fn inversion_with_trylock_inside_is_not_reported() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    in_task("ab", ab)?;
    let got = Arc::new(AtomicBool::new(false));
    let g = got.clone();
    in_task("b-try-a", move || {
        let _b = B.lock();
        let a = A.try_lock();
        g.store(a.is_some(), Ordering::SeqCst);
    })?;
    kassert!(got.load(Ordering::SeqCst), "the trylock failed");
    no_new_reports(before)?;
    kassert!(!lockdep::has_dependency(B.class(), A.class()));
    Ok(())
}

fn trylocked_lock_held_over_blocking_lock_records_an_edge() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    let held = Arc::new(spin::Mutex::new(Vec::new()));
    let h = held.clone();
    in_task("try-a-b", move || {
        let a = A.try_lock();
        let _b = B.lock();
        *h.lock() = lockdep::held_locks();
        drop(a);
    })?;
    let held = held.lock().clone();
    kassert_eq!(held.len(), 2, "{held:?}");
    kassert!(held[0].class == "ld_a" && held[0].trylock, "{held:?}");
    kassert!(lockdep::has_dependency(A.class(), B.class()));
    in_task("ba", ba)?;
    let r = one_report(before, ReportKind::CircularDependency)?;
    kassert_eq!(r.classes, alloc::vec!["ld_a", "ld_b"]);
    Ok(())
}

fn cycle_through_three_classes_is_reported_with_its_chain() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    in_task("ab", ab)?;
    in_task("bc", || {
        let _b = B.lock();
        let _c = C.lock();
    })?;
    no_new_reports(before)?;
    in_task("ca", || {
        let _c = C.lock();
        let _a = A.lock();
    })?;
    let r = one_report(before, ReportKind::CircularDependency)?;
    kassert_eq!(r.classes, alloc::vec!["ld_a", "ld_b", "ld_c"]);
    for s in [
        "-> #2 (ld_c):",
        "-> #1 (ld_b):",
        "-> #0 (ld_a):",
        "Chain exists of:\n   ld_a --> ld_b --> ld_c",
    ] {
        kassert!(r.text.contains(s), "no '{s}' in:{}", r.text);
    }
    Ok(())
}

fn each_cycle_is_reported_once_until_reset() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    in_task("ab", ab)?;
    in_task("ba", ba)?;
    in_task("ba-again", ba)?;
    one_report(before, ReportKind::CircularDependency)?;
    lockdep::reset_graph();
    let before = lockdep::report_count();
    in_task("ab", ab)?;
    in_task("ba", ba)?;
    one_report(before, ReportKind::CircularDependency)?;
    Ok(())
}

static REC_KEY: LockClassKey = LockClassKey::new("ld_rec");
static REC1: Mutex<()> = Mutex::new((), &REC_KEY);
static REC2: Mutex<()> = Mutex::new((), &REC_KEY);

fn recursive_locking_of_one_class_is_reported() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    {
        let _r1 = REC1.lock();
        let _r2 = REC2.lock();
    }
    let r = one_report(before, ReportKind::RecursiveLocking)?;
    kassert_eq!(r.classes, alloc::vec!["ld_rec"]);
    for s in [
        "WARNING: possible recursive locking detected",
        "  lock(ld_rec);\n  lock(ld_rec);",
        "May be due to missing lock nesting notation",
    ] {
        kassert!(r.text.contains(s), "no '{s}' in:{}", r.text);
    }
    Ok(())
}

fn nested_subclass_is_not_recursive() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    {
        let _r1 = REC1.lock();
        let _r2 = REC2.lock_nested(1);
    }
    no_new_reports(before)?;
    // Validated all the same: ld_rec/0 -> ld_rec/1 was recorded.
    kassert!(lockdep::has_dependency(&REC_KEY, &REC_KEY));
    Ok(())
}

fn rwsem_read_recursion_is_reported() -> TestResult {
    static S: RwSemaphore<()> = RwSemaphore::new((), lock_class!("ld_rwsem_rec"));
    lockdep::reset_graph();
    let before = lockdep::report_count();
    {
        let _r1 = S.down_read();
        let _r2 = S.down_read();
    }
    let r = one_report(before, ReportKind::RecursiveLocking)?;
    kassert_eq!(r.classes, alloc::vec!["ld_rwsem_rec"]);
    kassert!(r.text.contains("rlock(ld_rwsem_rec);"), "{}", r.text);
    Ok(())
}

fn release_of_unheld_lock_is_reported() -> TestResult {
    static MAP: LockdepMap = LockdepMap::new(lock_class!("ld_unheld"));
    lockdep::reset_graph();
    let before = lockdep::report_count();
    lockdep::lock_release(&MAP, &MAP as *const _ as usize, Location::caller());
    let r = one_report(before, ReportKind::BadUnlock)?;
    kassert_eq!(r.classes, alloc::vec!["ld_unheld"]);
    for s in [
        "WARNING: bad unlock balance detected!",
        "is trying to release lock (ld_unheld)",
        "but there are no more locks to release!",
    ] {
        kassert!(r.text.contains(s), "no '{s}' in:{}", r.text);
    }
    Ok(())
}

fn out_of_order_release_keeps_the_stack_balanced() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    let a = A.lock();
    let b = B.lock();
    let n = lockdep::held_locks().len();
    drop(a);
    let after_a: Vec<&str> = lockdep::held_locks().iter().map(|h| h.class).collect();
    drop(b);
    let after_b = lockdep::held_locks().len();
    kassert_eq!(n, 2);
    kassert_eq!(after_a, alloc::vec!["ld_b"]);
    kassert_eq!(after_b, 0);
    no_new_reports(before)
}

fn downgrade_marks_the_held_lock_shared() -> TestResult {
    static S: RwSemaphore<()> = RwSemaphore::new((), lock_class!("ld_downgrade"));
    lockdep::reset_graph();
    let before = lockdep::report_count();
    let w = S.down_write();
    let was_read = lockdep::held_locks()[0].read;
    let r = w.downgrade();
    let held = lockdep::held_locks();
    drop(r);
    kassert!(!was_read);
    kassert_eq!(held.len(), 1);
    kassert!(held[0].read, "{held:?}");
    kassert!(lockdep::held_locks().is_empty());
    no_new_reports(before)
}

// The seed in miniature. ILOCK stands in for XFS's inode lock.
static ILOCK: RwSemaphore<()> = RwSemaphore::new((), lock_class!("xfs_ilock"));

fn fs_reclaim() -> &'static LockClassKey {
    FS_RECLAIM_MAP.class()
}

/// Path 1 (readdir on a referenced inode): allocates holding the ILOCK.
fn path1_alloc_under_ilock(alloc: fn()) -> TestResult {
    in_task("readdir", move || {
        let _i = ILOCK.down_read();
        alloc();
    })
}

/// Path 2 (direct reclaim, as in __perform_reclaim): a shrinker takes the
/// ILOCK of an unreferenced inode inside the fs_reclaim section.
fn path2_reclaim_takes_ilock() -> TestResult {
    in_task("reclaim", || {
        let _r = FsReclaimGuard::new(GFP_KERNEL);
        let _m = MemallocScope::noreclaim();
        let _i = ILOCK.down_write();
    })
}

fn seed_ilock_held_over_gfp_kernel_alloc_vs_reclaim_is_reported() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    path1_alloc_under_ilock(|| might_alloc(GFP_KERNEL))?;
    kassert!(lockdep::has_dependency(ILOCK.class(), fs_reclaim()));
    no_new_reports(before)?;
    path2_reclaim_takes_ilock()?;
    let r = one_report(before, ReportKind::CircularDependency)?;
    kassert_eq!(r.classes, alloc::vec!["xfs_ilock", "fs_reclaim"]);
    kassert_eq!(r.task.as_str(), "reclaim");
    for s in [
        "is trying to acquire lock:\n (xfs_ilock)",
        "but task is already holding lock:\n (fs_reclaim)",
        "first seen by task 'readdir'",
        "  lock(fs_reclaim);\n                               lock(xfs_ilock);\n",
    ] {
        kassert!(r.text.contains(s), "no '{s}' in:{}", r.text);
    }
    Ok(())
}

fn seed_is_reported_whichever_path_runs_first() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    path2_reclaim_takes_ilock()?;
    no_new_reports(before)?;
    path1_alloc_under_ilock(|| might_alloc(GFP_KERNEL))?;
    let r = one_report(before, ReportKind::CircularDependency)?;
    kassert_eq!(r.classes, alloc::vec!["fs_reclaim", "xfs_ilock"]);
    kassert_eq!(r.task.as_str(), "readdir");
    kassert!(r.text.contains("rlock(xfs_ilock);"), "{}", r.text);
    Ok(())
}

/// Path 1 allocates as `alloc` does, then reclaim runs: no report, no
/// "ILOCK -> fs_reclaim" edge, while reclaim's own edge is recorded.
fn seed_not_reported(alloc: fn()) -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    path1_alloc_under_ilock(alloc)?;
    path2_reclaim_takes_ilock()?;
    no_new_reports(before)?;
    kassert!(!lockdep::has_dependency(ILOCK.class(), fs_reclaim()));
    kassert!(lockdep::has_dependency(fs_reclaim(), ILOCK.class()));
    Ok(())
}

fn seed_gfp_nofs_alloc_is_not_reported() -> TestResult {
    seed_not_reported(|| might_alloc(GFP_NOFS))
}

fn seed_alloc_in_nofs_scope_is_not_reported() -> TestResult {
    seed_not_reported(|| {
        let _nofs = MemallocScope::nofs();
        might_alloc(GFP_KERNEL);
    })
}

fn seed_nolockdep_alloc_is_not_reported() -> TestResult {
    seed_not_reported(|| might_alloc(GFP_KERNEL | Gfp::__GFP_NOLOCKDEP))
}

fn seed_non_sleeping_alloc_records_no_edge() -> TestResult {
    seed_not_reported(|| {
        might_alloc(GFP_ATOMIC);
        // Has __GFP_FS, but cannot enter direct reclaim.
        might_alloc(GFP_KERNEL - Gfp::__GFP_DIRECT_RECLAIM);
    })
}

fn seed_trylock_in_reclaim_is_not_reported() -> TestResult {
    for write in [true, false] {
        lockdep::reset_graph();
        let before = lockdep::report_count();
        path1_alloc_under_ilock(|| might_alloc(GFP_KERNEL))?;
        let got = Arc::new(AtomicBool::new(false));
        let g = got.clone();
        in_task("reclaim", move || {
            let _r = FsReclaimGuard::new(GFP_KERNEL);
            let _m = MemallocScope::noreclaim();
            // xfs_ilock_nowait: down_{write,read}_trylock.
            let ok = if write {
                ILOCK.try_write().is_some()
            } else {
                ILOCK.try_read().is_some()
            };
            g.store(ok, Ordering::SeqCst);
        })?;
        kassert!(got.load(Ordering::SeqCst), "trylock (write={write}) failed");
        no_new_reports(before)?;
        kassert!(lockdep::has_dependency(ILOCK.class(), fs_reclaim()));
        kassert!(!lockdep::has_dependency(fs_reclaim(), ILOCK.class()));
    }
    Ok(())
}

fn seed_reclaimer_with_pf_memalloc_records_no_edge() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    // A shrinker allocating (GFP_KERNEL) with the ILOCK held, inside reclaim.
    in_task("reclaim", || {
        let _r = FsReclaimGuard::new(GFP_KERNEL);
        let _m = MemallocScope::noreclaim();
        let _i = ILOCK.down_write();
        might_alloc(GFP_KERNEL);
    })?;
    no_new_reports(before)?;
    kassert!(!lockdep::has_dependency(ILOCK.class(), fs_reclaim()));
    kassert!(lockdep::has_dependency(fs_reclaim(), ILOCK.class()));
    Ok(())
}

fn lockdep_off_records_nothing() -> TestResult {
    static MAP: LockdepMap = LockdepMap::new(lock_class!("ld_off_unheld"));
    lockdep::reset_graph();
    let before = lockdep::report_count();
    lockdep::set_mode(LockdepMode::Off);
    ab();
    ba();
    {
        let _r1 = REC1.lock();
        let _r2 = REC2.lock();
    }
    lockdep::lock_release(&MAP, &MAP as *const _ as usize, Location::caller());
    let held = lockdep::held_locks().len();
    let a = A.lock();
    let held_a = lockdep::held_locks().len();
    drop(a);
    lockdep::set_mode(LockdepMode::On);
    no_new_reports(before)?;
    kassert_eq!((held, held_a), (0, 0));
    kassert_eq!(lockdep::dependency_count(), 0);
    Ok(())
}

fn task_exiting_with_a_lock_held_is_reported() -> TestResult {
    static LEAKED: Mutex<()> = Mutex::new((), lock_class!("ld_held_at_exit"));
    lockdep::reset_graph();
    let before = lockdep::report_count();
    in_task("leaker", || core::mem::forget(LEAKED.lock()))?;
    let r = one_report(before, ReportKind::HeldAtExit)?;
    kassert_eq!(r.classes, alloc::vec!["ld_held_at_exit"]);
    kassert_eq!(r.task.as_str(), "leaker");
    for s in [
        "WARNING: task 'leaker' exited with locks held!",
        "1 lock held by task 'leaker':\n #0:",
    ] {
        kassert!(r.text.contains(s), "no '{s}' in:{}", r.text);
    }
    Ok(())
}

/// Runs `relock` in task `name`: it takes a lock of class `class` it already
/// holds and sets its flag only if that second acquisition returns. Checks
/// the task never got a second guard and stays blocked, that lockdep
/// reported recursive locking in Linux's shape (`scenario`), that the
/// deadlock detector named the task and the lock (`kind`), and that other
/// tasks still run. Returns the parked task's id.
fn relock_parks_the_task(
    name: &'static str,
    class: &'static str,
    kind: &str,
    scenario: &str,
    relock: fn(&AtomicBool),
) -> Result<task::TaskId, TestFailure> {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    let dl_before = task::deadlock::report_count();
    let second = Arc::new(AtomicBool::new(false));
    let s = second.clone();
    let h = task::spawn(name, move || relock(&s))
        .map_err(|e| TestFailure::new(format!("spawn '{name}': {e:?}")))?;
    kassert_eq!(
        h.join_timeout(Duration::from_secs(5)),
        Err(JoinError::Deadlocked)
    );
    kassert!(
        !second.load(Ordering::SeqCst),
        "the second acquisition returned a guard"
    );
    kassert_eq!(h.task().state(), TaskState::Blocked);
    let r = one_report(before, ReportKind::RecursiveLocking)?;
    kassert_eq!(r.classes, alloc::vec![class]);
    kassert_eq!(r.task.as_str(), name);
    kassert!(r.text.contains(scenario), "no '{scenario}' in:{}", r.text);
    let d = task::deadlock::reports();
    kassert_eq!(d.len(), dl_before + 1);
    let d = &d[dl_before];
    let tasks: Vec<&str> = d.tasks.iter().map(|(_, n)| n.as_str()).collect();
    kassert_eq!(tasks, alloc::vec![name]);
    kassert_eq!(d.locks, alloc::vec![String::from(class)]);
    let line = format!(
        "task '{name}' (id {id}) waits for {kind} '{class}'",
        id = h.task().id()
    );
    let held = format!("held by task '{name}' (id {})", h.task().id());
    let title = String::from("DEADLOCK DETECTED: a task waits for a lock it already holds");
    for s in [&title, &line, &held] {
        kassert!(d.text.contains(s.as_str()), "no '{s}' in:{}", d.text);
    }
    // The rest of the kernel carries on.
    in_task("bystander", ab)?;
    Ok(h.task().id())
}

fn mutex_relock_by_owner_is_reported_and_parks_the_task() -> TestResult {
    static M: Mutex<u32> = Mutex::new(0, lock_class!("ld_self_mutex"));
    let id = relock_parks_the_task(
        "mutex-relocker",
        "ld_self_mutex",
        "mutex",
        "  lock(ld_self_mutex);\n  lock(ld_self_mutex);",
        |second| {
            let mut g = M.lock();
            *g += 1;
            let _g2 = M.lock();
            second.store(true, Ordering::SeqCst);
        },
    )?;
    // The parked task keeps it: nobody else gets it.
    kassert_eq!(M.owner(), Some(id));
    kassert!(M.try_lock().is_none());
    Ok(())
}

fn rwsem_write_relock_by_owner_is_reported_and_parks_the_task() -> TestResult {
    static S: RwSemaphore<u32> = RwSemaphore::new(0, lock_class!("ld_self_rwsem"));
    let id = relock_parks_the_task(
        "rwsem-relocker",
        "ld_self_rwsem",
        "rwsem (write)",
        "  lock(ld_self_rwsem);\n  lock(ld_self_rwsem);",
        |second| {
            let _w = S.down_write();
            let _w2 = S.down_write();
            second.store(true, Ordering::SeqCst);
        },
    )?;
    kassert_eq!(S.holders(), (Some(id), 0));
    Ok(())
}

fn rwsem_write_after_read_by_one_task_is_reported_and_parks_it() -> TestResult {
    static S: RwSemaphore<u32> = RwSemaphore::new(0, lock_class!("ld_self_rwsem_rw"));
    relock_parks_the_task(
        "rwsem-upgrader",
        "ld_self_rwsem_rw",
        "rwsem (write)",
        "  rlock(ld_self_rwsem_rw);\n  lock(ld_self_rwsem_rw);",
        |second| {
            let _r = S.down_read();
            let _w = S.down_write();
            second.store(true, Ordering::SeqCst);
        },
    )?;
    kassert_eq!(S.holders(), (None, 1));
    Ok(())
}

fn spinlock_relock_by_owner_is_reported_and_parks_the_task() -> TestResult {
    static L: SpinLock<u32> = SpinLock::new(0, lock_class!("ld_self_spin"));
    relock_parks_the_task(
        "spin-relocker",
        "ld_self_spin",
        "spinlock",
        "  lock(ld_self_spin);\n  lock(ld_self_spin);",
        |second| {
            let _l = L.lock();
            let _l2 = L.lock();
            second.store(true, Ordering::SeqCst);
        },
    )?;
    kassert!(L.is_locked());
    // Interrupts work again (the parked task masked them): timers fire.
    task::sleep(Duration::from_millis(1));
    Ok(())
}

/// Issue 9: the report text was built with `String`/`format!`, so a report
/// made while slab allocations fail aborted the kernel. Now it is printed
/// as far as memory allows and the kernel carries on.
fn report_under_failslab_is_printed_without_panicking() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    let injected = FAILSLAB.injected();
    in_task("ab", ab)?;
    in_task("ba-failslab", || {
        FAILSLAB.configure(100, 1, -1);
        ba();
        FAILSLAB.disable();
    })?;
    kassert!(
        FAILSLAB.injected() > injected,
        "no allocation of the report failed"
    );
    // Kept if there was room in the list; its text is then what could be built.
    let r = lockdep::reports_since(before);
    kassert!(r.len() <= 1, "reports: {:?}", summary(&r));
    if let Some(r) = r.first() {
        kassert_eq!(r.kind, ReportKind::CircularDependency);
    }
    Ok(())
}

static CH_A: SpinLock<()> = SpinLock::new((), lock_class!("ld_chain_a"));
static CH_B: SpinLock<()> = SpinLock::new((), lock_class!("ld_chain_b"));
static CH_C: SpinLock<()> = SpinLock::new((), lock_class!("ld_chain_c"));

/// Validations and chain-cache hits of this task during `f`.
fn counted(f: impl FnOnce()) -> (u64, u64) {
    let s0 = lockdep::task_stats();
    f();
    let s1 = lockdep::task_stats();
    (
        s1.validations - s0.validations,
        s1.chain_hits - s0.chain_hits,
    )
}

fn a_then_b() {
    let _a = CH_A.lock();
    let _b = CH_B.lock();
}

fn cached_chain_skips_validation() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    // First time: both chains ([a] and [a, b]) are validated.
    kassert_eq!(counted(a_then_b), (2, 0));
    kassert!(lockdep::has_dependency(CH_A.class(), CH_B.class()));
    // Again: both are cache hits, nothing validated.
    kassert_eq!(counted(a_then_b), (0, 2));
    kassert_eq!(counted(a_then_b), (0, 2));
    // A reset forgets the chains with the edges.
    lockdep::reset_graph();
    kassert_eq!(counted(a_then_b), (2, 0));
    kassert!(lockdep::has_dependency(CH_A.class(), CH_B.class()));
    no_new_reports(before)
}

fn cached_chain_never_hides_a_new_order() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    a_then_b();
    a_then_b();
    // b then a: [b] is new, [b, a] is new: validated, and the cycle found.
    let (v, _) = counted(|| {
        let _b = CH_B.lock();
        let _a = CH_A.lock();
    });
    kassert_eq!(v, 2);
    let r = one_report(before, ReportKind::CircularDependency)?;
    kassert_eq!(r.classes, alloc::vec!["ld_chain_a", "ld_chain_b"]);
    // [c, a, b] shares its tail with the cached [a, b], but its key covers
    // the whole stack: validated, so c -> a is recorded and b -> c closes a
    // cycle through it.
    lockdep::reset_graph();
    let before = lockdep::report_count();
    a_then_b();
    let (v, _) = counted(|| {
        let _c = CH_C.lock();
        a_then_b();
    });
    kassert_eq!(v, 3, "[c], [c, a], [c, a, b] are all new chains");
    kassert!(lockdep::has_dependency(CH_C.class(), CH_A.class()));
    {
        let _b = CH_B.lock();
        let _c = CH_C.lock();
    }
    let r = one_report(before, ReportKind::CircularDependency)?;
    kassert!(r.classes.contains(&"ld_chain_c"), "{:?}", r.classes);
    Ok(())
}

static CH_N_KEY: LockClassKey = LockClassKey::new("ld_chain_n");
static CH_N1: SpinLock<()> = SpinLock::new((), &CH_N_KEY);
static CH_N2: SpinLock<()> = SpinLock::new((), &CH_N_KEY);

fn chain_key_covers_prefix_subclass_and_trylock() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    // Subclass: [n/0, n/1] is not [n/0, n/2].
    let nested = |sub: u8| {
        counted(|| {
            let _a = CH_N1.lock();
            let _b = CH_N2.lock_nested(sub);
        })
    };
    kassert_eq!(nested(1), (2, 0));
    kassert_eq!(nested(1), (0, 2));
    kassert_eq!(nested(2), (1, 1), "[n/0] cached, [n/0, n/2] new");
    // Trylock: a trylocked `a` below `b` is another chain than a blocking
    // one (edges are recorded through trylocked entries differently).
    lockdep::reset_graph();
    a_then_b();
    let (v, h) = counted(|| {
        let _a = CH_A.try_lock().unwrap();
        let _b = CH_B.lock();
    });
    kassert_eq!((v, h), (1, 0), "[a (trylock), b] is a new chain");
    let (v, h) = counted(|| {
        let _a = CH_A.try_lock().unwrap();
        let _b = CH_B.lock();
    });
    kassert_eq!((v, h), (0, 1));
    // A recursion is never cached: validated (and deduplicated) each time.
    let rec = || {
        counted(|| {
            let _a = REC1.lock();
            let _b = REC2.lock();
        })
    };
    lockdep::reset_graph();
    let before_rec = lockdep::report_count();
    kassert_eq!(rec().0, 2);
    kassert_eq!(rec().0, 1);
    one_report(before_rec, ReportKind::RecursiveLocking)?;
    kassert_eq!(lockdep::reports_since(before).len(), 1);
    Ok(())
}

fn reports_name_the_cpu() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    {
        let _r1 = REC1.lock();
        let _r2 = REC2.lock();
    }
    let r = one_report(before, ReportKind::RecursiveLocking)?;
    let cpu = kreclaim::platform::cpu_id();
    kassert_eq!(r.cpu, cpu);
    let line = format!("reported on CPU#{cpu}\n");
    kassert!(r.text.contains(&line), "no '{line}' in:{}", r.text);
    Ok(())
}
