//! Rust's global allocator asks the platform whether it may sleep while the
//! framework's scheduler is not running (a kernel with a scheduler of its
//! own): GFP_KERNEL where the platform says so, GFP_ATOMIC where it does not.

use kreclaim::mm::gfp::{GFP_ATOMIC, GFP_KERNEL};
use kreclaim::mm::global_alloc::global_gfp;
use kreclaim::platform::{self, Platform};
use std::sync::atomic::{AtomicBool, Ordering};

/// A platform whose scheduler (not ours) says whether its context may sleep.
struct OwnScheduler {
    may_sleep: AtomicBool,
}

impl Platform for OwnScheduler {
    fn irq_save(&self) -> bool {
        false
    }
    fn irq_restore(&self, _was_enabled: bool) {}
    fn now_ns(&self) -> u64 {
        0
    }
    fn cycles(&self) -> u64 {
        0
    }
    fn console_write(&self, s: &str) {
        eprint!("{s}");
    }
    fn may_sleep(&self) -> bool {
        self.may_sleep.load(Ordering::Relaxed)
    }
}

static OWN: OwnScheduler = OwnScheduler {
    may_sleep: AtomicBool::new(true),
};

#[test]
fn global_gfp_follows_the_platform_without_our_scheduler() {
    platform::set(&OWN);
    assert!(!kreclaim::task::started());
    assert_eq!(global_gfp(), GFP_KERNEL, "the platform says it may sleep");
    OWN.may_sleep.store(false, Ordering::Relaxed);
    assert_eq!(
        global_gfp(),
        GFP_ATOMIC,
        "the platform says it may not sleep"
    );
    OWN.may_sleep.store(true, Ordering::Relaxed);
    assert_eq!(global_gfp(), GFP_KERNEL);
}
