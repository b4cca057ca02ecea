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
