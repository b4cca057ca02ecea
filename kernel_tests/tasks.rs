//! Kernel threads, scheduling, sleeping locks, wait queues, deadlock detection.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use kreclaim::harness::{TestFailure, TestResult, wait_for};
use kreclaim::mm::fault_inject::FAILSLAB;
use kreclaim::prelude::{GFP_ATOMIC, Gfp, KBox};
use kreclaim::sync::lockdep::{self, LockdepMode};
use kreclaim::sync::{
    Completion, Mutex, RawSpinLock, RwSemaphore, SpinLock, TicketLock, WaitQueue,
};
use kreclaim::task::{self, JoinError, SchedMode, TaskId, TaskState};
use kreclaim::{kassert, kassert_eq, lock_class};

kreclaim::kernel_tests!(
    spawn_runs_and_join_waits,
    current_names_the_running_task,
    preempted_busy_tasks_both_progress,
    cooperative_mode_does_not_preempt,
    preempt_disable_holds_the_cpu,
    sleep_waits_at_least_its_duration,
    mutex_blocks_and_wakes,
    mutex_try_lock_fails_while_held,
    mutex_hands_off_in_fifo_order,
    rwsem_readers_share,
    rwsem_writer_excludes_readers,
    rwsem_downgrade_admits_readers_not_writers,
    rwsem_trylocks,
    completion_wakes_waiter,
    waitqueue_timeout_expires,
    two_task_deadlock_is_detected,
    task_stacks_are_freed_after_exit,
    exiting_tasks_free_their_stacks_without_allocating,
    mutex_relock_by_owner_parks_it_with_lockdep_off,
    rwsem_relock_by_writer_parks_it_with_lockdep_off,
    spinlock_relock_by_owner_parks_it_with_lockdep_off,
    ticket_lock_serves_in_ticket_order,
    spinlock_tickets_count_exactly,
    lock_torture_counts_exactly,
    wait_event_sees_a_wake_between_check_and_sleep,
);

fn spawn_runs_and_join_waits() -> TestResult {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let h = task::spawn("worker", move || {
        task::sleep(Duration::from_millis(5));
        r.store(true, Ordering::SeqCst);
    })
    .unwrap();
    kassert!(h.join().is_ok());
    kassert!(ran.load(Ordering::SeqCst));
    Ok(())
}

fn current_names_the_running_task() -> TestResult {
    kassert_eq!(task::current().name(), "main");
    let name = Arc::new(spin::Mutex::new(alloc::string::String::new()));
    let n = name.clone();
    task::spawn("named-worker", move || {
        *n.lock() = task::current().name().into()
    })
    .unwrap()
    .join()
    .unwrap();
    kassert_eq!(name.lock().as_str(), "named-worker");
    Ok(())
}

/// Two tasks that spin without ever yielding, until both have run (or the
/// wait gives up): on a loaded host a fixed time may pass before the second
/// one gets its first slice.
fn busy_pair() -> (u64, u64) {
    let a = Arc::new(AtomicU64::new(0));
    let b = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mk = |c: Arc<AtomicU64>, s: Arc<AtomicBool>| {
        move || {
            while !s.load(Ordering::Relaxed) {
                c.fetch_add(1, Ordering::Relaxed);
                core::hint::spin_loop();
            }
        }
    };
    let ha = task::spawn("busy-a", mk(a.clone(), stop.clone())).unwrap();
    let hb = task::spawn("busy-b", mk(b.clone(), stop.clone())).unwrap();
    let _ = wait_for("both busy tasks to run", || {
        a.load(Ordering::Relaxed) > 0 && b.load(Ordering::Relaxed) > 0
    });
    let r = (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    ha.join().unwrap();
    hb.join().unwrap();
    r
}

fn preempted_busy_tasks_both_progress() -> TestResult {
    // Neither task ever yields: only timer preemption lets both run.
    let (a, b) = busy_pair();
    kassert!(a > 0 && b > 0, "a={a} b={b}");
    Ok(())
}

fn cooperative_mode_does_not_preempt() -> TestResult {
    task::set_mode(SchedMode::Cooperative);
    let order = Arc::new(spin::Mutex::new(Vec::new()));
    let mut hs = Vec::new();
    for i in 0..3u32 {
        let o = order.clone();
        hs.push(
            task::spawn("coop", move || {
                // Busy for a few ticks without yielding: in coop mode nobody
                // else may run in between.
                let t0 = kreclaim::time::now_ns();
                o.lock().push(i * 10);
                while kreclaim::time::now_ns() - t0 < 20_000_000 {
                    core::hint::spin_loop();
                }
                o.lock().push(i * 10 + 1);
            })
            .unwrap(),
        );
    }
    for h in hs {
        h.join().unwrap();
    }
    task::set_mode(SchedMode::Preemptive);
    kassert_eq!(*order.lock(), alloc::vec![0, 1, 10, 11, 20, 21]);
    Ok(())
}

fn preempt_disable_holds_the_cpu() -> TestResult {
    let other = Arc::new(AtomicU64::new(0));
    let o = other.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // On the boot CPU with the test: preempt_disable holds this CPU only.
    let h = task::spawn_on(0, "spinner", move || {
        while !s.load(Ordering::Relaxed) {
            o.fetch_add(1, Ordering::Relaxed);
        }
    })
    .unwrap();
    task::yield_now(); // let it start
    let before;
    let after;
    {
        let _g = task::PreemptGuard::new();
        before = other.load(Ordering::Relaxed);
        let t0 = kreclaim::time::now_ns();
        while kreclaim::time::now_ns() - t0 < 50_000_000 {
            core::hint::spin_loop();
        }
        after = other.load(Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    kassert_eq!(
        before,
        after,
        "the spinner ran inside a preempt_disable region"
    );
    Ok(())
}

fn sleep_waits_at_least_its_duration() -> TestResult {
    for ms in [1u64, 10, 30] {
        let t0 = kreclaim::time::now_ns();
        task::sleep(Duration::from_millis(ms));
        let took = kreclaim::time::now_ns() - t0;
        kassert!(took >= ms * 1_000_000, "sleep({ms} ms) took {took} ns");
    }
    Ok(())
}

fn mutex_blocks_and_wakes() -> TestResult {
    static M: Mutex<u32> = Mutex::new(0, lock_class!("test_mutex"));
    let g = M.lock();
    let entered = Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let h = task::spawn("waiter", move || {
        let mut g = M.lock();
        e.store(true, Ordering::SeqCst);
        *g += 1;
    })
    .unwrap();
    // Until the waiter has blocked (or, wrongly, got in): it may not have
    // run at all yet after a fixed sleep.
    wait_for("the waiter to block", || {
        h.task().state() == TaskState::Blocked || entered.load(Ordering::SeqCst)
    })?;
    kassert!(
        !entered.load(Ordering::SeqCst),
        "waiter got in while main held the mutex"
    );
    kassert_eq!(h.task().state(), TaskState::Blocked);
    drop(g);
    h.join().unwrap();
    kassert!(entered.load(Ordering::SeqCst));
    kassert_eq!(*M.lock(), 1);
    Ok(())
}

fn mutex_try_lock_fails_while_held() -> TestResult {
    static M: Mutex<()> = Mutex::new((), lock_class!("test_trylock"));
    let g = M.lock();
    kassert_eq!(M.owner(), Some(task::current().id()));
    let got = Arc::new(AtomicBool::new(true));
    let g2 = got.clone();
    task::spawn("try", move || {
        g2.store(M.try_lock().is_some(), Ordering::SeqCst)
    })
    .unwrap()
    .join()
    .unwrap();
    kassert!(!got.load(Ordering::SeqCst));
    drop(g);
    kassert!(M.try_lock().is_some());
    Ok(())
}

fn mutex_hands_off_in_fifo_order() -> TestResult {
    static M: Mutex<Vec<u32>> = Mutex::new(Vec::new(), lock_class!("test_fifo"));
    let g = M.lock();
    let mut hs = Vec::new();
    for i in 0..4 {
        let h = task::spawn("fifo", move || M.lock().push(i)).unwrap();
        // Queue in order: each waiter blocks before the next one starts.
        wait_for("the waiter to queue", || {
            h.task().state() == TaskState::Blocked || h.is_finished()
        })?;
        hs.push(h);
    }
    drop(g);
    for h in hs {
        h.join().unwrap();
    }
    kassert_eq!(*M.lock(), alloc::vec![0, 1, 2, 3]);
    Ok(())
}

fn rwsem_readers_share() -> TestResult {
    static S: RwSemaphore<u32> = RwSemaphore::new(7, lock_class!("test_rwsem_share"));
    let _r = S.down_read();
    let ok = Arc::new(AtomicBool::new(false));
    let o = ok.clone();
    let h = task::spawn("reader", move || {
        let r = S.down_read();
        o.store(*r == 7, Ordering::SeqCst);
    })
    .unwrap();
    kassert!(
        h.join_timeout(Duration::from_secs(60)).is_ok(),
        "second reader blocked"
    );
    kassert!(ok.load(Ordering::SeqCst));
    Ok(())
}

fn rwsem_writer_excludes_readers() -> TestResult {
    static S: RwSemaphore<u32> = RwSemaphore::new(0, lock_class!("test_rwsem_excl"));
    let r = S.down_read();
    let wrote = Arc::new(AtomicBool::new(false));
    let w = wrote.clone();
    let hw = task::spawn("writer", move || {
        *S.down_write() += 1;
        w.store(true, Ordering::SeqCst);
    })
    .unwrap();
    // The late reader below must find the writer queued, not merely spawned.
    wait_for("the writer to queue", || {
        hw.task().state() == TaskState::Blocked || wrote.load(Ordering::SeqCst)
    })?;
    kassert!(
        !wrote.load(Ordering::SeqCst),
        "writer entered while a reader held it"
    );
    // A new reader queues behind the waiting writer.
    let late = Arc::new(AtomicUsize::new(99));
    let l = late.clone();
    let hr = task::spawn("late-reader", move || {
        l.store(*S.down_read() as usize, Ordering::SeqCst)
    })
    .unwrap();
    wait_for("the late reader to queue", || {
        hr.task().state() == TaskState::Blocked || late.load(Ordering::SeqCst) != 99
    })?;
    kassert_eq!(
        late.load(Ordering::SeqCst),
        99,
        "reader overtook a waiting writer"
    );
    drop(r);
    hw.join().unwrap();
    hr.join().unwrap();
    kassert!(wrote.load(Ordering::SeqCst));
    kassert_eq!(
        late.load(Ordering::SeqCst),
        1,
        "late reader must see the write"
    );
    Ok(())
}

fn rwsem_downgrade_admits_readers_not_writers() -> TestResult {
    static S: RwSemaphore<u32> = RwSemaphore::new(0, lock_class!("test_rwsem_down"));
    let mut w = S.down_write();
    *w = 5;
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let hr = task::spawn("reader", move || {
        s2.store(*S.down_read() as usize, Ordering::SeqCst)
    })
    .unwrap();
    wait_for("the reader to queue", || {
        hr.task().state() == TaskState::Blocked || seen.load(Ordering::SeqCst) != 0
    })?;
    kassert_eq!(seen.load(Ordering::SeqCst), 0);
    let r = w.downgrade();
    kassert!(hr.join_timeout(Duration::from_secs(60)).is_ok());
    kassert_eq!(seen.load(Ordering::SeqCst), 5);
    kassert!(
        S.try_write().is_none(),
        "writer got in while downgraded reader holds it"
    );
    drop(r);
    kassert!(S.try_write().is_some());
    Ok(())
}

fn rwsem_trylocks() -> TestResult {
    static S: RwSemaphore<()> = RwSemaphore::new((), lock_class!("test_rwsem_try"));
    let r1 = S.try_read();
    kassert!(r1.is_some());
    kassert!(S.try_read().is_some());
    kassert!(S.try_write().is_none());
    drop(r1);
    let w = S.try_write();
    kassert!(w.is_some());
    kassert!(S.try_read().is_none());
    Ok(())
}

fn completion_wakes_waiter() -> TestResult {
    let c = Arc::new(Completion::new());
    let c2 = c.clone();
    let t0 = kreclaim::time::now_ns();
    task::spawn("completer", move || {
        task::sleep(Duration::from_millis(20));
        c2.complete();
    })
    .unwrap();
    c.wait();
    kassert!(kreclaim::time::now_ns() - t0 >= 20_000_000);
    kassert!(
        !c.wait_timeout(Duration::from_millis(5)),
        "a single complete() released two waits"
    );
    Ok(())
}

fn waitqueue_timeout_expires() -> TestResult {
    static WQ: WaitQueue = WaitQueue::new("test_wq");
    let t0 = kreclaim::time::now_ns();
    kassert!(!WQ.wait_event_timeout(Duration::from_millis(15), || false));
    kassert!(kreclaim::time::now_ns() - t0 >= 15_000_000);
    kassert!(WQ.wait_event_timeout(Duration::from_millis(15), || true));
    Ok(())
}

fn two_task_deadlock_is_detected() -> TestResult {
    static A: Mutex<()> = Mutex::new((), lock_class!("deadlock_lock_a"));
    static B: Mutex<()> = Mutex::new((), lock_class!("deadlock_lock_b"));
    let before = task::deadlock::report_count();
    // Each task takes its second lock only once both hold their first: a
    // fixed sleep instead lets one task finish first on a loaded host.
    let holding = Arc::new(AtomicUsize::new(0));
    let both_hold = |h: &AtomicUsize| {
        h.fetch_add(1, Ordering::SeqCst);
        while h.load(Ordering::SeqCst) < 2 {
            task::sleep(Duration::from_millis(1));
        }
    };
    let h_ab = holding.clone();
    let h1 = task::spawn("taker-ab", move || {
        let _a = A.lock();
        both_hold(&h_ab);
        let _b = B.lock();
    })
    .unwrap();
    let h_ba = holding.clone();
    let h2 = task::spawn("taker-ba", move || {
        let _b = B.lock();
        both_hold(&h_ba);
        let _a = A.lock();
    })
    .unwrap();
    kassert_eq!(
        h1.join_timeout(Duration::from_secs(60)),
        Err(JoinError::Deadlocked)
    );
    kassert_eq!(
        h2.join_timeout(Duration::from_secs(60)),
        Err(JoinError::Deadlocked)
    );
    let reports = task::deadlock::reports();
    kassert_eq!(reports.len(), before + 1);
    let r = &reports[before];
    let names: Vec<&str> = r.tasks.iter().map(|(_, n)| n.as_str()).collect();
    kassert!(
        names.contains(&"taker-ab") && names.contains(&"taker-ba"),
        "{names:?}"
    );
    kassert!(
        r.locks.iter().any(|l| l == "deadlock_lock_a"),
        "{:?}",
        r.locks
    );
    kassert!(
        r.locks.iter().any(|l| l == "deadlock_lock_b"),
        "{:?}",
        r.locks
    );
    kassert!(r.text.contains("held by task"), "{}", r.text);
    Ok(())
}

fn task_stacks_are_freed_after_exit() -> TestResult {
    // Warm up, then many short tasks must not grow the heap.
    task::spawn("warm", || {}).unwrap().join().unwrap();
    task::yield_now();
    let (used0, _) = kreclaim::arch::x86_64::early_heap().usage();
    for _ in 0..50 {
        task::spawn("short", || {}).unwrap().join().unwrap();
    }
    task::yield_now();
    let (used1, _) = kreclaim::arch::x86_64::early_heap().usage();
    kassert!(
        used1 < used0 + 64 * 1024,
        "heap grew from {used0} to {used1} over 50 tasks"
    );
    Ok(())
}

/// Slab fault injection at 100% until dropped.
struct FailslabAll;

impl FailslabAll {
    fn new() -> Self {
        FAILSLAB.configure(100, 1, -1);
        Self
    }
}

impl Drop for FailslabAll {
    fn drop(&mut self) {
        FAILSLAB.configure(0, 1, 0);
    }
}

fn exiting_tasks_free_their_stacks_without_allocating() -> TestResult {
    // A dead task's stack is freed in `finish_task_switch`, with interrupts
    // masked: any allocation there is GFP_ATOMIC and may fail. Many tasks
    // exiting while every slab allocation fails must not panic the kernel
    // (the stack-slot list used to grow there, infallibly).
    const N: usize = 40;
    let go = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..N {
        let go = go.clone();
        handles.push(
            task::spawn("exiter", move || {
                while !go.load(Ordering::SeqCst) {
                    task::sleep(Duration::from_millis(1));
                }
            })
            .map_err(|e| TestFailure::new(alloc::format!("spawn: {e:?}")))?,
        );
    }
    let injected = FAILSLAB.injected();
    let failslab = FailslabAll::new();
    let probe = KBox::new(0u64, GFP_ATOMIC | Gfp::__GFP_NOWARN);
    go.store(true, Ordering::SeqCst);
    let mut joined = 0;
    for h in handles {
        if h.join().is_ok() {
            joined += 1;
        }
    }
    drop(failslab);
    kassert_eq!(joined, N);
    kassert!(
        probe.is_err(),
        "failslab was not on: the test proves nothing"
    );
    kassert!(FAILSLAB.injected() > injected);
    // The slots came back: as many tasks again can start.
    for _ in 0..N {
        task::spawn("again", || {})
            .map_err(|e| TestFailure::new(alloc::format!("spawn: {e:?}")))?
            .join()
            .map_err(|e| TestFailure::new(alloc::format!("join: {e:?}")))?;
    }
    Ok(())
}

/// Lockdep off until dropped (as with `lockdep=off`).
struct LockdepOff;

impl LockdepOff {
    fn new() -> Self {
        lockdep::set_mode(LockdepMode::Off);
        Self
    }
}

impl Drop for LockdepOff {
    fn drop(&mut self) {
        lockdep::set_mode(LockdepMode::On);
    }
}

/// With lockdep off, runs `relock` in task `name`: it takes a lock it
/// already holds and sets its flag only if that second acquisition returns.
/// Checks the task never got a second guard and stays blocked, that the
/// deadlock detector (not lockdep) named the task and the lock, and that
/// other tasks still run. Returns the parked task's id.
fn relock_parks_with_lockdep_off(
    name: &'static str,
    class: &'static str,
    kind: &str,
    relock: fn(&AtomicBool),
) -> Result<TaskId, TestFailure> {
    let _off = LockdepOff::new();
    let lockdep_before = lockdep::report_count();
    let before = task::deadlock::report_count();
    let second = Arc::new(AtomicBool::new(false));
    let s = second.clone();
    let h = task::spawn(name, move || relock(&s)).unwrap();
    kassert_eq!(
        h.join_timeout(Duration::from_secs(5)),
        Err(JoinError::Deadlocked)
    );
    kassert!(
        !second.load(Ordering::SeqCst),
        "the second acquisition returned a guard"
    );
    kassert_eq!(h.task().state(), TaskState::Blocked);
    kassert_eq!(lockdep::report_count(), lockdep_before);
    let reports = task::deadlock::reports();
    kassert_eq!(reports.len(), before + 1);
    let r = &reports[before];
    let names: Vec<&str> = r.tasks.iter().map(|(_, n)| n.as_str()).collect();
    kassert_eq!(names, alloc::vec![name]);
    kassert_eq!(r.locks, alloc::vec![alloc::string::String::from(class)]);
    let id = h.task().id();
    let line = alloc::format!("task '{name}' (id {id}) waits for {kind} '{class}' @0x",);
    let held = alloc::format!("held by task '{name}' (id {id})");
    let title =
        alloc::string::String::from("DEADLOCK DETECTED: a task waits for a lock it already holds");
    for s in [&title, &line, &held] {
        kassert!(r.text.contains(s.as_str()), "no '{s}' in:{}", r.text);
    }
    // The rest of the kernel carries on.
    task::spawn("bystander", || task::sleep(Duration::from_millis(1)))
        .unwrap()
        .join()
        .unwrap();
    Ok(id)
}

fn mutex_relock_by_owner_parks_it_with_lockdep_off() -> TestResult {
    static M: Mutex<u32> = Mutex::new(0, lock_class!("test_self_mutex"));
    let id =
        relock_parks_with_lockdep_off("mutex-relocker", "test_self_mutex", "mutex", |second| {
            let mut g = M.lock();
            *g += 1;
            drop(M.lock()); // would unlock it under `g`
            second.store(true, Ordering::SeqCst);
            *g += 1;
        })?;
    // The parked task keeps it; another task does not get it.
    kassert_eq!(M.owner(), Some(id));
    let got = Arc::new(AtomicBool::new(true));
    let g = got.clone();
    task::spawn("try", move || {
        g.store(M.try_lock().is_some(), Ordering::SeqCst)
    })
    .unwrap()
    .join()
    .unwrap();
    kassert!(!got.load(Ordering::SeqCst), "another task got the mutex");
    Ok(())
}

fn rwsem_relock_by_writer_parks_it_with_lockdep_off() -> TestResult {
    static S: RwSemaphore<u32> = RwSemaphore::new(0, lock_class!("test_self_rwsem"));
    let id = relock_parks_with_lockdep_off(
        "rwsem-reader-writer",
        "test_self_rwsem",
        "rwsem (read)",
        |second| {
            let _w = S.down_write();
            let _r = S.down_read();
            second.store(true, Ordering::SeqCst);
        },
    )?;
    kassert_eq!(S.holders(), (Some(id), 0));
    kassert!(S.try_read().is_none());
    Ok(())
}

fn spinlock_relock_by_owner_parks_it_with_lockdep_off() -> TestResult {
    static L: SpinLock<u32> = SpinLock::new(0, lock_class!("test_self_spin"));
    relock_parks_with_lockdep_off("spin-relocker", "test_self_spin", "spinlock", |second| {
        let _p = task::PreemptGuard::new();
        let _l = L.lock();
        let _l2 = L.lock();
        second.store(true, Ordering::SeqCst);
    })?;
    // Its preempt_disable section ended with it: preemption still works.
    kassert_eq!(task::preempt_count(), 0);
    kassert!(L.is_locked());
    kassert!(L.try_lock().is_none());
    // Another task wanting it would spin for ever with interrupts masked:
    // it is parked too, and reported.
    let before = task::deadlock::report_count();
    let got = Arc::new(AtomicBool::new(false));
    let g = got.clone();
    let h = task::spawn("spin-contender", move || {
        let _l = L.lock();
        g.store(true, Ordering::SeqCst);
    })
    .unwrap();
    kassert_eq!(
        h.join_timeout(Duration::from_secs(5)),
        Err(JoinError::Deadlocked)
    );
    kassert!(!got.load(Ordering::SeqCst));
    kassert_eq!(h.task().state(), TaskState::Blocked);
    let reports = task::deadlock::reports();
    kassert_eq!(reports.len(), before + 1);
    let r = &reports[before];
    for s in [
        "DEADLOCK DETECTED: a task waits for a spinlock held by a deadlocked task",
        "task 'spin-contender'",
        "waits for spinlock 'test_self_spin'",
        "held by task 'spin-relocker'",
    ] {
        kassert!(r.text.contains(s), "no '{s}' in:{}", r.text);
    }
    task::spawn("bystander", || task::sleep(Duration::from_millis(1)))
        .unwrap()
        .join()
        .unwrap();
    Ok(())
}

fn ticket_lock_serves_in_ticket_order() -> TestResult {
    let l = TicketLock::new();
    kassert!(!l.is_locked());
    kassert!(l.try_lock());
    // Three waiters queue behind the holder, in the order they asked.
    let w: Vec<_> = (0..3).map(|_| l.take_ticket()).collect();
    kassert!(!l.try_lock(), "try_lock must not jump the queue");
    kassert!(w.iter().all(|t| !l.is_served(*t)));
    for i in 0..3 {
        l.unlock();
        for (j, t) in w.iter().enumerate() {
            kassert_eq!(
                l.is_served(*t),
                i == j,
                "after {} unlocks, waiter {j}",
                i + 1
            );
        }
    }
    l.unlock();
    kassert!(!l.is_locked());
    kassert_eq!(l.tickets(), (4, 4));
    // The counters wrap: only their difference matters.
    let l = TicketLock::new();
    for _ in 0..3 {
        l.lock();
        l.unlock();
    }
    kassert_eq!(l.tickets(), (3, 3));
    Ok(())
}

fn spinlock_tickets_count_exactly() -> TestResult {
    static S: SpinLock<u64> = SpinLock::new(0, lock_class!("test_tickets"));
    static R: RawSpinLock<u64> = RawSpinLock::new(0);
    let (n0, o0) = S.tickets();
    kassert_eq!(n0, o0);
    for _ in 0..100 {
        *S.lock() += 1;
        *R.lock() += 1;
    }
    {
        let _g = S.lock();
        kassert!(S.is_locked());
        kassert_eq!(S.owner(), Some(task::current().id()));
        // A failed try_lock draws no ticket (it would never be served).
        kassert!(S.try_lock().is_none());
        kassert!(R.try_lock().is_some());
        kassert_eq!(S.tickets(), (n0.wrapping_add(101), o0.wrapping_add(100)));
    }
    kassert!(!S.is_locked() && S.owner().is_none());
    kassert_eq!(S.tickets(), (n0.wrapping_add(101), o0.wrapping_add(101)));
    kassert_eq!(*S.lock(), 100);
    kassert_eq!(*R.lock(), 100);
    Ok(())
}

/// Lock torture (works on one CPU, scales with more): `TASKS` tasks
/// contend on each lock kind, yielding inside critical sections so that
/// waiters queue; every counter must come out exact, a reader must never
/// see a writer's half-done update, and a completion chain must pass every
/// task.
fn lock_torture_counts_exactly() -> TestResult {
    const TASKS: u64 = 4;
    const ITERS: u64 = 300;
    static SPIN: SpinLock<u64> = SpinLock::new(0, lock_class!("torture_spin"));
    static MUTEX: Mutex<u64> = Mutex::new(0, lock_class!("torture_mutex"));
    static RW: RwSemaphore<(u64, u64)> = RwSemaphore::new((0, 0), lock_class!("torture_rwsem"));
    static TORN: AtomicUsize = AtomicUsize::new(0);
    let done = Arc::new(Completion::new());
    let mut hs = Vec::new();
    for t in 0..TASKS {
        let done = done.clone();
        hs.push(
            task::spawn("torture", move || {
                for i in 0..ITERS {
                    *SPIN.lock() += 1;
                    {
                        let mut m = MUTEX.lock();
                        let v = *m;
                        if (i + t) % 7 == 0 {
                            task::yield_now();
                        }
                        *m = v + 1;
                    }
                    if (i + t) % 3 == 0 {
                        let mut w = RW.down_write();
                        w.0 += 1;
                        if i % 5 == 0 {
                            task::yield_now();
                        }
                        w.1 += 1;
                    } else {
                        let r = RW.down_read();
                        if r.0 != r.1 {
                            TORN.fetch_add(1, Ordering::SeqCst);
                        }
                        if i % 11 == 0 {
                            task::yield_now();
                        }
                    }
                }
                done.complete();
            })
            .unwrap(),
        );
    }
    for _ in 0..TASKS {
        done.wait();
    }
    for h in hs {
        kassert!(h.join_timeout(Duration::from_secs(120)).is_ok());
    }
    let writes: u64 = (0..TASKS)
        .map(|t| (0..ITERS).filter(|i| (i + t) % 3 == 0).count() as u64)
        .sum();
    kassert_eq!(*SPIN.lock(), TASKS * ITERS);
    kassert_eq!(*MUTEX.lock(), TASKS * ITERS);
    kassert_eq!(*RW.down_read(), (writes, writes));
    kassert_eq!(TORN.load(Ordering::SeqCst), 0, "a reader saw a torn write");
    kassert!(
        !done.is_done(),
        "every completion was consumed exactly once"
    );
    Ok(())
}

/// The waker makes the condition true between the waiter's last check and
/// its sleep: the waiter, queued before checking, is woken and not lost.
fn wait_event_sees_a_wake_between_check_and_sleep() -> TestResult {
    static WQ: WaitQueue = WaitQueue::new("test_wq_race");
    static FLAG: AtomicBool = AtomicBool::new(false);
    static CHECKS: AtomicUsize = AtomicUsize::new(0);
    FLAG.store(false, Ordering::SeqCst);
    CHECKS.store(0, Ordering::SeqCst);
    let h = task::spawn("wq-waiter", || {
        WQ.wait_event(|| {
            // The fast check fails; on the next (queued) check, play the
            // waker on "another CPU": set the flag and wake the queue,
            // then report false as if the flag had been read just before.
            let n = CHECKS.fetch_add(1, Ordering::SeqCst);
            if n == 1 {
                FLAG.store(true, Ordering::SeqCst);
                WQ.wake_all();
                return false;
            }
            FLAG.load(Ordering::SeqCst)
        });
    })
    .unwrap();
    kassert!(
        h.join_timeout(Duration::from_secs(60)).is_ok(),
        "the waiter slept through the wake-up"
    );
    kassert!(CHECKS.load(Ordering::SeqCst) >= 3);
    Ok(())
}
