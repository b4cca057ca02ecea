//! The current task is per host thread: scoped NOFS and PF_* flags of one
//! thread do not leak into another (kernel tasks have the same property).

use kreclaim::mm::gfp::{GFP_KERNEL, GFP_NOFS};
use kreclaim::mm::scope::{MemallocScope, current_gfp_context};
use std::sync::{Arc, Barrier};

mod common;

#[test]
fn memalloc_scopes_are_per_thread() {
    common::host();
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let other = std::thread::spawn(move || {
        let _nofs = MemallocScope::nofs();
        assert_eq!(current_gfp_context(GFP_KERNEL), GFP_NOFS);
        b.wait(); // the scope is open while the main thread looks
        b.wait();
        kreclaim::task::current().id()
    });
    barrier.wait();
    assert_eq!(
        current_gfp_context(GFP_KERNEL),
        GFP_KERNEL,
        "another thread's NOFS scope leaked here"
    );
    barrier.wait();
    let other_id = other.join().unwrap();
    assert_ne!(
        other_id,
        kreclaim::task::current().id(),
        "both threads share one task"
    );
}

/// A host thread cannot be parked by kreclaim's scheduler, so a spinlock
/// taken again by its owner panics with the report instead of spinning
/// forever with the "CPU" held (which would hang every thread).
#[test]
fn spinlock_recursion_panics_with_a_report_instead_of_hanging() {
    use kreclaim::sync::SpinLock;
    static L: SpinLock<u32> = SpinLock::new(0, kreclaim::lock_class!("host_self_spin"));
    common::host();
    let before = kreclaim::task::deadlock::report_count();
    let relocker = std::thread::Builder::new()
        .name("spin-relocker".into())
        .spawn(|| {
            let _first = L.lock();
            let _second = L.lock();
        })
        .unwrap();
    let err = relocker.join().expect_err("the second lock() returned");
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or("");
    assert!(msg.contains("recursive locking"), "panic message: {msg:?}");
    let reports = kreclaim::task::deadlock::reports();
    assert_eq!(reports.len(), before + 1);
    let r = &reports[before];
    assert_eq!(r.tasks[0].1, "spin-relocker");
    assert_eq!(r.locks, ["host_self_spin"]);
    assert!(
        r.text.contains("waits for spinlock 'host_self_spin'"),
        "{}",
        r.text
    );
    // Unwinding dropped the first guard: the lock and the "CPU" are free.
    assert!(L.try_lock().is_some());
}
