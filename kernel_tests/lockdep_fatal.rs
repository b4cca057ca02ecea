//! lockdep=fatal: a report panics, which fails the kernel (here: expected).

#![no_std]
#![no_main]

use kreclaim::bootinfo::BootInfo;
use kreclaim::lock_class;
use kreclaim::sync::Mutex;
use kreclaim::sync::lockdep::{self, LockdepMode};

static A: Mutex<()> = Mutex::new((), lock_class!("fatal_a"));
static B: Mutex<()> = Mutex::new((), lock_class!("fatal_b"));

kreclaim::entry_point!(main);

fn main(boot: &'static BootInfo) -> ! {
    kreclaim::harness::run_expecting_end(boot, "fatal_mode_panics_on_a_report", || {
        kreclaim::harness::expect_panic(|m| {
            m.contains("lockdep: possible circular locking dependency detected")
        });
        lockdep::set_mode(LockdepMode::Fatal);
        {
            let _a = A.lock();
            let _b = B.lock();
        }
        // The inverse order panics in lock_acquire, before B's holder could
        // ever block on A.
        let _b = B.lock();
        let _a = A.lock();
    })
}
