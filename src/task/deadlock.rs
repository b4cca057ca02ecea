//! Real deadlock detection (not lockdep's prediction): when tasks wait on
//! each other in a cycle, or when every task is blocked, report who waits
//! for what and who holds it, instead of hanging.
//!
//! Sleeping locks record what a task blocks on ([`BlockedOn`]) and can name
//! their holders ([`WaitTarget`]). A task that blocks on a lock follows the
//! chain "lock -> holder -> lock the holder waits for -> ..." and, on coming
//! back to itself, reports the cycle; the tasks in it are marked deadlocked
//! (they never run again and joining them fails) so the rest of the kernel
//! carries on. The idle task reports when nothing can ever run again.
//!
//! The search runs on every contended lock acquisition, often under memory
//! pressure, so it allocates nothing; only a found deadlock is stored.
//!
//! SMP: searches are serialised by one raw spinlock (`DETECT`), and a task
//! records what it blocks on before it searches, so when two tasks on two
//! CPUs close a cycle at the same moment the second search sees the first
//! task's record. Each hop reads the task's `blocked_on` under that task's
//! lock and the lock's holders under the lock's own internal lock; every
//! task on the path is pinned by an `Arc` taken under the task-table lock,
//! so none is freed while the search looks at it.
//!
//! A task taking a non-recursive lock it already holds (mutex, rwsem for
//! writing, spinlock) waits for itself: the lock reports it through
//! `self_deadlock`, a cycle of one task, and the task is parked for good,
//! as Linux leaves such a task hung. It never gets a second guard. A task
//! that would then spin on a spinlock the parked task holds is parked too
//! (`spin_on_deadlocked`) rather than hang the CPU.

use super::{Task, TaskId, TaskState};
use crate::sync::RawSpinLock;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Something a task can block on that knows who holds it.
pub trait WaitTarget: Sync {
    /// Writes the ids of the tasks holding it now into `out`; returns how many.
    fn holders(&self, out: &mut [TaskId]) -> usize;
}

/// What a blocked task waits for.
#[derive(Clone, Copy)]
pub struct BlockedOn {
    /// "mutex", "rwsem (read)", "rwsem (write)", "wait queue".
    pub kind: &'static str,
    /// The lock class or wait-queue name.
    pub name: &'static str,
    /// The instance's address.
    pub addr: usize,
    /// Who holds it, when it is a lock. Valid while the task waits on it.
    pub target: Option<*const (dyn WaitTarget + 'static)>,
}

// SAFETY: `target` points at a lock that outlives its waiters.
unsafe impl Send for BlockedOn {}

/// A reported deadlock: the tasks in the cycle (or every blocked task) and
/// the locks they wait on.
#[derive(Clone, Debug)]
pub struct DeadlockReport {
    /// `true` when every task is blocked (the idle task reported), `false` for a cycle.
    pub all_blocked: bool,
    /// The tasks involved: id and name.
    pub tasks: Vec<(TaskId, String)>,
    /// Names of the wait targets the tasks block on.
    pub locks: Vec<String>,
    /// The report as printed.
    pub text: String,
}

/// Reported deadlocks, protected by their own lock.
static REPORTS: spin::Mutex<Vec<DeadlockReport>> = spin::Mutex::new(Vec::new());
/// Serialises wait-for-cycle searches across CPUs (see the module docs).
static DETECT: RawSpinLock<()> = RawSpinLock::new(());
static ALL_BLOCKED_STREAK: AtomicU32 = AtomicU32::new(0);
static STOP_ON_ALL_BLOCKED: AtomicBool = AtomicBool::new(true);

/// Every deadlock reported since boot.
pub fn reports() -> Vec<DeadlockReport> {
    crate::platform::without_interrupts(|| REPORTS.lock().clone())
}

/// Number of deadlocks reported.
pub fn report_count() -> usize {
    crate::platform::without_interrupts(|| REPORTS.lock().len())
}

/// What to do when every task is blocked: by default print and stop the
/// machine with failure; `false` records the report and parks the tasks.
pub fn set_stop_on_all_blocked(stop: bool) {
    STOP_ON_ALL_BLOCKED.store(stop, Ordering::Relaxed);
}

const MAX_HOLDERS: usize = 8;
const MAX_DEPTH: usize = 16;

#[derive(Clone, Copy)]
struct Hop {
    task: *const Task,
    on: BlockedOn,
    holders: [TaskId; MAX_HOLDERS],
    n: usize,
}

fn hop_of(t: *const Task) -> Option<Hop> {
    // SAFETY: callers pass the running task or a task they pinned with an
    // `Arc` (see `dfs` and `idle_check`), so it is alive.
    let tr = unsafe { &*t };
    let on = (*tr.blocked_on.lock())?;
    let mut holders = [0; MAX_HOLDERS];
    let n = match on.target {
        // SAFETY: a lock outlives the tasks blocked on it.
        Some(target) => unsafe { (*target).holders(&mut holders) },
        None => 0,
    };
    Some(Hop {
        task: t,
        on,
        holders,
        n,
    })
}

/// The live task with id `id`, pinned.
fn task_arc(id: TaskId) -> Option<Arc<Task>> {
    super::with_task(id, Arc::clone)
}

/// A task name copied out under the task-table lock.
struct NameBuf {
    bytes: [u8; 32],
    len: usize,
}

impl NameBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }
}

fn name_of(id: TaskId) -> Option<NameBuf> {
    super::with_task(id, |t| {
        let name = t.name();
        let mut len = name.len().min(32);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; 32];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        NameBuf { bytes, len }
    })
}

/// Writes one "task waits for lock held by ..." line.
fn describe(out: &mut dyn Write, h: &Hop) -> fmt::Result {
    // SAFETY: `h.task` came from hop_of in this detection, whose caller pins
    // every task it passes (or it is the running task).
    let t = unsafe { &*h.task };
    write!(
        out,
        "  task '{}' (id {}) waits for {} '{}' @{:#x}",
        t.name(),
        t.id(),
        h.on.kind,
        h.on.name,
        h.on.addr
    )?;
    if h.on.target.is_some() {
        if h.n == 0 {
            write!(out, ", held by nobody")?;
        } else {
            write!(out, ", held by")?;
            for id in &h.holders[..h.n] {
                match name_of(*id) {
                    Some(n) => write!(out, " task '{}' (id {id})", n.as_str())?,
                    None => write!(out, " task {id}")?,
                }
            }
        }
    }
    out.write_str("\n")
}

/// Prints to the console and, if memory allows, keeps a copy.
struct Tee {
    text: String,
    keep: bool,
}

impl Write for Tee {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::print!("{s}");
        if self.keep {
            if self.text.try_reserve(s.len()).is_ok() {
                self.text.push_str(s);
            } else {
                self.keep = false;
            }
        }
        Ok(())
    }
}

fn store(all_blocked: bool, hops: &[Hop], text: String) {
    let mut tasks = Vec::new();
    let mut locks = Vec::new();
    if tasks.try_reserve(hops.len()).is_ok() && locks.try_reserve(hops.len()).is_ok() {
        for h in hops {
            // SAFETY: `h.task` came from hop_of in this detection, whose
            // caller keeps every task on it pinned until the report is stored.
            let t = unsafe { &*h.task };
            tasks.push((t.id(), String::from(t.name())));
            locks.push(String::from(h.on.name));
        }
    }
    REPORTS.lock().push(DeadlockReport {
        all_blocked,
        tasks,
        locks,
        text,
    });
}

/// Called by a task that just recorded what it blocks on, before it sleeps:
/// reports and marks a wait-for cycle through it. Interrupts are masked.
pub(crate) fn check_cycle(me: &Task) {
    let _detect = DETECT.lock();
    let mut path = [None::<Hop>; MAX_DEPTH];
    let mut pins = [const { None::<Arc<Task>> }; MAX_DEPTH];
    if !dfs(me as *const Task, me.id(), &mut path, &mut pins, 0) || !still_a_cycle(&path, me.id()) {
        return;
    }
    let hops: Vec<Hop> = path.iter().flatten().copied().collect();
    let mut out = Tee {
        text: String::new(),
        keep: true,
    };
    let _ = out.write_str(
        "\n======================================================\n\
         DEADLOCK DETECTED: tasks wait for each other in a cycle\n\
         ------------------------------------------------------\n",
    );
    for h in &hops {
        let _ = describe(&mut out, h);
    }
    let _ = out.write_str("  these tasks will never run again.\n======================================================\n");
    let text = if out.keep { out.text } else { String::new() };
    store(false, &hops, text);
    for h in &hops {
        // SAFETY: `h.task` is the running task or pinned in `pins` until
        // this function returns.
        super::mark_deadlocked(unsafe { &*h.task });
    }
}

/// The current task is taking the lock described by `on`, which it already
/// holds. Reports "task waits for a lock held by itself", marks the task
/// deadlocked and parks it: it stays blocked forever (keeping the lock)
/// and the rest of the kernel carries on. Never returns, so no second guard
/// can exist.
///
/// A task that cannot block (before the scheduler starts, the idle task, a
/// thread of a platform that schedules its own threads) panics after the
/// report instead: the only other choice is hanging the CPU.
pub(crate) fn self_deadlock(on: BlockedOn) -> ! {
    let me = super::current();
    park_forever(
        on,
        me,
        "a task waits for a lock it already holds",
        "recursive locking",
    )
}

/// The current task would spin, interrupts masked, on a spinlock held by
/// `holder`, a deadlocked (parked) task that will never release it: on one
/// CPU that hangs the machine. Reports it and parks this task as well.
pub(crate) fn spin_on_deadlocked(on: BlockedOn, holder: &Task) -> ! {
    park_forever(
        on,
        holder,
        "a task waits for a spinlock held by a deadlocked task",
        "spinlock held by a deadlocked task",
    )
}

fn park_forever(on: BlockedOn, holder: &Task, title: &str, why: &str) -> ! {
    // Never restored when parked: the next task runs with its own state.
    let _irq = crate::platform::IrqGuard::new();
    let me = super::current();
    let mut holders = [0; MAX_HOLDERS];
    holders[0] = holder.id();
    let hop = Hop {
        task: me as *const Task,
        on,
        holders,
        n: 1,
    };
    // Per task: a lock hit again while this task's report allocates (the
    // lock was an allocator lock) only prints, and a task parking on another
    // CPU at the same time still reports in full.
    let nested = me.park_reporting.swap(true, Ordering::Acquire);
    let mut out = Tee {
        text: String::new(),
        keep: !nested,
    };
    let bar = "======================================================";
    let _ = write!(
        out,
        "\n{bar}\nDEADLOCK DETECTED: {title}\n------------------------------------------------------\n"
    );
    // Not `describe`: it looks the holder up in the task table, which the
    // caller may hold.
    let _ = writeln!(
        out,
        "  task '{}' (id {}) waits for {} '{}' @{:#x}, held by task '{}' (id {})",
        me.name(),
        me.id(),
        on.kind,
        on.name,
        on.addr,
        holder.name(),
        holder.id()
    );
    let parkable = super::can_block_current();
    let _ = writeln!(
        out,
        "  {}\n{bar}",
        if parkable {
            "this task will never run again."
        } else {
            "this task cannot block here: stopping."
        }
    );
    if !nested {
        let text = if out.keep { out.text } else { String::new() };
        store(false, &[hop], text);
    }
    // Also when nested: the outer report belongs to this task, which never
    // comes back to finish it.
    me.park_reporting.store(false, Ordering::Release);
    if !parkable {
        panic!(
            "{why}: task '{}' takes {} '{}' held by task '{}' (see the report above)",
            me.name(),
            on.kind,
            on.name,
            holder.name()
        );
    }
    super::set_blocked_on(on);
    // Blocked before the joiners learn of it (on another CPU they look at
    // once `mark_deadlocked` completes `exited`).
    super::prepare_to_block();
    super::mark_deadlocked(me);
    // The count is per CPU: preempt_disable sections of the parked task
    // would otherwise stay open for every task after it.
    crate::platform::with_irq_guard(|irq| super::set_preempt_count_irqs_masked(irq, 0));
    loop {
        // A deadlocked task is never woken; loop in case of a stray wake-up.
        super::block_current_locked();
        super::prepare_to_block();
    }
}

/// Re-reads every hop of a cycle the search found: each task still blocked
/// on the same lock, which the next task on the path still holds. On SMP
/// the hops were read one after the other while locks changed hands on
/// other CPUs (a lock handed from A to B between reading B's hop and A's
/// looks like A and B waiting for each other); a real deadlock does not
/// change, a hand-off in progress does.
fn still_a_cycle(path: &[Option<Hop>; MAX_DEPTH], goal: TaskId) -> bool {
    let hops: Vec<&Hop> = path.iter().flatten().collect();
    hops.iter().enumerate().all(|(i, h)| {
        // SAFETY: the path's tasks are the running task or pinned in the
        // caller's `pins`.
        let t = unsafe { &*h.task };
        let next = hops.get(i + 1).map_or(goal, |n| {
            // SAFETY: as above.
            unsafe { &*n.task }.id()
        });
        matches!(t.state(), TaskState::Blocked | TaskState::Sleeping)
            && hop_of(h.task).is_some_and(|now| {
                now.on.addr == h.on.addr
                    && now.holders[..now.n].contains(&next)
                    && !now.holders[..now.n].contains(&t.id())
            })
    })
}

/// Depth-first search from `t` for a wait-for path back to `goal`. Tasks
/// reached through a holder id are pinned in `pins[depth]` for as long as
/// they are on the path.
fn dfs(
    t: *const Task,
    goal: TaskId,
    path: &mut [Option<Hop>; MAX_DEPTH],
    pins: &mut [Option<Arc<Task>>; MAX_DEPTH],
    depth: usize,
) -> bool {
    // SAFETY: `t` is the blocking (running) task or pinned in `pins` by the
    // caller.
    if depth >= MAX_DEPTH || unsafe { &*t }.is_deadlocked() {
        return false;
    }
    let Some(hop) = hop_of(t) else {
        return false;
    };
    // A lock hands itself over by taking the waiter off its wait list and
    // then making it a holder, both before the waiter runs again, so the
    // waiter's `blocked_on` is stale for a moment: on SMP the waiter may
    // even be the searching task, seeing itself as the holder of what it
    // "waits" for. The holders were read first (and with acquire
    // ordering): a task that is no longer queued, or that is among the
    // holders already (granted by a waker on another CPU, and not run since
    // to clear its record), waits for nothing, so the path ends here. Taking
    // a lock it holds already is caught before queueing.
    // SAFETY: as above, `t` is alive.
    let tr = unsafe { &*t };
    if (hop.on.target.is_some() && !tr.wait_queued.load(Ordering::Acquire))
        || hop.holders[..hop.n].contains(&tr.id())
    {
        return false;
    }
    path[depth] = Some(hop);
    for &h in &hop.holders[..hop.n] {
        if h == goal {
            return true;
        }
        if path[..depth]
            .iter()
            .flatten()
            // SAFETY: the path's tasks are the running task or pinned in
            // `pins` while they are on the path.
            .any(|x| unsafe { &*x.task }.id() == h)
        {
            continue;
        }
        if depth + 1 < MAX_DEPTH
            && let Some(next) = task_arc(h)
        {
            let p = Arc::as_ptr(&next);
            pins[depth + 1] = Some(next);
            if dfs(p, goal, path, pins, depth + 1) {
                return true;
            }
            pins[depth + 1] = None;
        }
    }
    path[depth] = None;
    false
}

/// Run by the idle task: if nothing is runnable, no timed wait is pending and
/// every live task is blocked, nothing can ever run again — report it.
///
/// SMP: run by the boot CPU's idle task only; every CPU's run queue must be
/// empty, and a task running on another CPU is not blocked. Idle tasks are
/// never counted.
pub(crate) fn idle_check() {
    if !super::all_run_queues_empty() || super::pending_timers() != 0 {
        ALL_BLOCKED_STREAK.store(0, Ordering::Relaxed);
        return;
    }
    let mut live = 0;
    let mut blocked = 0;
    // A dead task still in the table is being reaped on its CPU, which
    // then wakes its joiners: progress, not a deadlock.
    let mut reaping = false;
    super::for_each_task(|t| {
        if t.is_idle() || t.is_deadlocked() {
            return;
        }
        match t.state() {
            TaskState::Dead => reaping = true,
            s => {
                live += 1;
                blocked += (s == TaskState::Blocked) as usize;
            }
        }
    });
    if live == 0 || blocked != live || reaping {
        ALL_BLOCKED_STREAK.store(0, Ordering::Relaxed);
        return;
    }
    // Give interrupt-driven wake-ups a few ticks before declaring defeat.
    if ALL_BLOCKED_STREAK.fetch_add(1, Ordering::Relaxed) < 50 {
        return;
    }
    ALL_BLOCKED_STREAK.store(0, Ordering::Relaxed);
    // Pinned: on SMP a task reported here could otherwise be woken, exit
    // and be freed on another CPU while the report is written.
    let mut hops: Vec<(Arc<Task>, Option<Hop>)> = Vec::new();
    super::for_each_task(|t| {
        let p = alloc::sync::Arc::as_ptr(t);
        if !t.is_idle() && !t.is_deadlocked() && t.state() == TaskState::Blocked {
            let _ = hops.try_reserve(1);
            if hops.len() < hops.capacity() {
                hops.push((t.clone(), hop_of(p)));
            }
        }
    });
    let mut out = Tee {
        text: String::new(),
        keep: true,
    };
    let _ = out.write_str(
        "\n======================================================\n\
         DEADLOCK DETECTED: every task is blocked and nothing can wake them\n\
         ------------------------------------------------------\n",
    );
    for (p, h) in &hops {
        match h {
            Some(h) => {
                let _ = describe(&mut out, h);
            }
            None => {
                let _ = writeln!(out, "  task '{}' (id {}) is blocked", p.name(), p.id());
            }
        }
    }
    let _ = out.write_str("======================================================\n");
    let with_hops: Vec<Hop> = hops.iter().filter_map(|(_, h)| *h).collect();
    let text = if out.keep { out.text } else { String::new() };
    crate::platform::without_interrupts(|| store(true, &with_hops, text));
    if STOP_ON_ALL_BLOCKED.load(Ordering::Relaxed) {
        panic!("every task is blocked: deadlock (see the report above)");
    }
    for (p, _) in hops {
        super::mark_deadlocked(&p);
    }
}
