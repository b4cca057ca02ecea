//! The framework's locks across host threads, each thread a CPU of its own
//! (no process-wide lock serialises them): exact counters under every lock
//! kind, FIFO ticket order, and a rwsem that never admits a writer together
//! with a reader or another writer.

use kreclaim::lock_class;
use kreclaim::sync::{Mutex, RawSpinLock, RwSemaphore, SpinLock, TicketLock};
use kreclaim::task::deadlock;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

mod common;

/// Runs `f(thread index)` on `n` threads started together; joins them.
fn on_threads(n: usize, f: impl Fn(usize) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let go = Arc::new(Barrier::new(n));
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let (f, go) = (f.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                f(i)
            })
        })
        .collect();
    for h in hs {
        h.join().expect("a locking thread panicked");
    }
}

/// A critical section long enough for other threads to pile up behind it
/// (and for a broken lock to lose updates).
fn dawdle(_i: usize) {
    for _ in 0..100 {
        std::hint::spin_loop();
    }
}

/// A sleeping lock's critical section may be preempted: yield inside it.
fn dawdle_sleeping(i: usize) {
    if i.is_multiple_of(16) {
        std::thread::yield_now();
    }
}

/// Fails the thread if a deadlock was reported since `before`: none of
/// these tests can deadlock. A waiter that is handed the lock while it
/// searches for a wait-for cycle must not see itself as the holder of what
/// it waits for; a task so marked is never handed a lock again and would
/// wait forever at its next contended acquisition. Checked before each
/// acquisition, so the marked thread fails here instead of hanging.
fn no_new_deadlock_report(before: usize) {
    let now = deadlock::report_count();
    assert_eq!(
        now,
        before,
        "false deadlock reported: {:?}",
        deadlock::reports().last().map(|r| r.text.clone())
    );
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: common::cases().min(8),
        ..common::config()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn spinlock_counts_exactly(threads in 2usize..5, iters in 1usize..3000) {
        static L: SpinLock<u64> = SpinLock::new(0, lock_class!("host_props_spin"));
        common::host();
        let _serial = kreclaim_host::serial();
        let start = *L.lock();
        on_threads(threads, move |_| {
            for i in 0..iters {
                let mut g = L.lock();
                // Non-atomic read-modify-write: lost updates show a broken lock.
                let v = *g;
                dawdle(i);
                *g = v + 1;
            }
        });
        prop_assert_eq!(*L.lock() - start, (threads * iters) as u64);
        prop_assert!(!L.is_locked());
        let (next, owner) = L.tickets();
        prop_assert_eq!(next, owner);
    }

    #[test]
    fn raw_spinlock_counts_exactly(threads in 2usize..5, iters in 1usize..3000) {
        static L: RawSpinLock<u64> = RawSpinLock::new(0);
        common::host();
        let _serial = kreclaim_host::serial();
        let start = *L.lock();
        on_threads(threads, move |_| {
            for i in 0..iters {
                let mut g = L.lock();
                let v = *g;
                dawdle(i);
                *g = v + 1;
            }
        });
        prop_assert_eq!(*L.lock() - start, (threads * iters) as u64);
    }

    #[test]
    fn mutex_counts_exactly(threads in 2usize..5, iters in 1usize..600) {
        static M: Mutex<u64> = Mutex::new(0, lock_class!("host_props_mutex"));
        common::host();
        let _serial = kreclaim_host::serial();
        let start = *M.lock();
        let reports = deadlock::report_count();
        on_threads(threads, move |_| {
            for i in 0..iters {
                no_new_deadlock_report(reports);
                let mut g = M.lock();
                let v = *g;
                // Yielding with the mutex held makes the others queue and
                // sleep; unlock hands it to the longest waiter.
                dawdle_sleeping(i);
                *g = v + 1;
            }
        });
        prop_assert_eq!(*M.lock() - start, (threads * iters) as u64);
        prop_assert!(!M.is_locked());
    }

    #[test]
    fn rwsem_never_admits_a_writer_with_anyone(
        threads in 2usize..5,
        iters in 1usize..400,
        write_every in 1usize..5,
    ) {
        static S: RwSemaphore<(u64, u64)> =
            RwSemaphore::new((0, 0), lock_class!("host_props_rwsem"));
        static READERS: AtomicUsize = AtomicUsize::new(0);
        static WRITERS: AtomicUsize = AtomicUsize::new(0);
        static BAD: AtomicUsize = AtomicUsize::new(0);
        common::host();
        let _serial = kreclaim_host::serial();
        let start = S.down_read().0;
        BAD.store(0, Ordering::SeqCst);
        let reports = deadlock::report_count();
        on_threads(threads, move |t| {
            for i in 0..iters {
                no_new_deadlock_report(reports);
                if (i + t) % write_every == 0 {
                    let mut w = S.down_write();
                    if WRITERS.fetch_add(1, Ordering::SeqCst) != 0
                        || READERS.load(Ordering::SeqCst) != 0
                    {
                        BAD.fetch_add(1, Ordering::SeqCst);
                    }
                    w.0 += 1;
                    dawdle_sleeping(i);
                    w.1 += 1;
                    WRITERS.fetch_sub(1, Ordering::SeqCst);
                } else {
                    let r = S.down_read();
                    READERS.fetch_add(1, Ordering::SeqCst);
                    if WRITERS.load(Ordering::SeqCst) != 0 || r.0 != r.1 {
                        BAD.fetch_add(1, Ordering::SeqCst);
                    }
                    dawdle_sleeping(i);
                    READERS.fetch_sub(1, Ordering::SeqCst);
                }
            }
        });
        let writes = (0..threads)
            .map(|t| (0..iters).filter(|i| (i + t) % write_every == 0).count() as u64)
            .sum::<u64>();
        let end = *S.down_read();
        prop_assert_eq!(BAD.load(Ordering::SeqCst), 0, "a writer shared the rwsem");
        prop_assert_eq!(end.0 - start, writes);
        prop_assert_eq!(end.0, end.1);
        prop_assert_eq!(S.holders(), (None, 0));
    }
}

/// Waiters are served in the order they drew their tickets, whatever the
/// threads' timing, and none before the holder lets go.
#[test]
fn ticket_lock_is_fifo_across_threads() {
    const WAITERS: usize = 4;
    let lock = Arc::new(TicketLock::new());
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let drawn = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    lock.lock();
    let hs: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (lock, order, drawn, released) =
                (lock.clone(), order.clone(), drawn.clone(), released.clone());
            std::thread::spawn(move || {
                let t = lock.take_ticket();
                drawn.fetch_add(1, Ordering::SeqCst);
                while !lock.is_served(t) {
                    std::thread::yield_now();
                }
                let early = !released.load(Ordering::SeqCst);
                order.lock().unwrap().push((t.0, early));
                lock.unlock();
            })
        })
        .collect();
    while drawn.load(Ordering::SeqCst) < WAITERS {
        std::thread::yield_now();
    }
    // Let the waiters spin a while: none may get in.
    for _ in 0..100 {
        std::thread::yield_now();
    }
    released.store(true, Ordering::SeqCst);
    lock.unlock();
    for h in hs {
        h.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    let want: Vec<_> = (1..=WAITERS as u32).map(|t| (t, false)).collect();
    assert_eq!(order, want, "(ticket, served before the holder let go)");
    assert!(!lock.is_locked());
}

/// Every thread is a CPU of its own: distinct CPU numbers at once, below
/// `NR_CPUS`, and interrupt masking on one thread does not mask another's.
#[test]
fn each_thread_is_a_cpu() {
    use kreclaim::platform::{self, IrqGuard, NR_CPUS};
    common::host();
    let go = Arc::new(Barrier::new(3));
    let ids: Vec<_> = (0..3)
        .map(|_| {
            let go = go.clone();
            std::thread::spawn(move || {
                let _irq = IrqGuard::new();
                let id = platform::cpu_id();
                go.wait(); // all three hold their CPU (and mask "interrupts") now
                let nested = IrqGuard::new();
                assert!(!nested.were_enabled(), "masked on this thread");
                id
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "CPU numbers {ids:?}");
    assert!(ids.iter().all(|&i| i < NR_CPUS));
    // This thread's interrupts were never masked by the others.
    assert!(IrqGuard::new().were_enabled());
}
