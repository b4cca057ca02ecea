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

use super::{Task, TaskId, TaskState};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

/// Something a task can block on that knows who holds it.
pub trait WaitTarget: Sync {
    /// The tasks holding it now.
    fn holders(&self, out: &mut Vec<TaskId>);
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
    pub all_blocked: bool,
    pub tasks: Vec<(TaskId, String)>,
    pub locks: Vec<String>,
    pub text: String,
}

static REPORTS: spin::Mutex<Vec<DeadlockReport>> = spin::Mutex::new(Vec::new());
static ALL_BLOCKED_STREAK: AtomicU32 = AtomicU32::new(0);

/// Every deadlock reported since boot.
pub fn reports() -> Vec<DeadlockReport> {
    crate::platform::without_interrupts(|| REPORTS.lock().clone())
}

pub fn report_count() -> usize {
    crate::platform::without_interrupts(|| REPORTS.lock().len())
}

/// What to do when every task is blocked: by default print and stop the
/// machine with failure; a test can instead have it recorded only.
static STOP_ON_ALL_BLOCKED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(true);

pub fn set_stop_on_all_blocked(stop: bool) {
    STOP_ON_ALL_BLOCKED.store(stop, Ordering::Relaxed);
}

fn holders_of(t: &Task) -> Option<(BlockedOn, Vec<TaskId>)> {
    let b = (*t.blocked_on.lock())?;
    let mut v = Vec::new();
    if let Some(target) = b.target {
        // SAFETY: a lock outlives the tasks blocked on it.
        unsafe { (*target).holders(&mut v) };
    }
    Some((b, v))
}

fn describe(out: &mut String, t: &Task, b: &BlockedOn, holders: &[TaskId], tasks: &[Arc<Task>]) {
    let _ = write!(
        out,
        "  task '{}' (id {}) waits for {} '{}' @{:#x}",
        t.name(),
        t.id(),
        b.kind,
        b.name,
        b.addr
    );
    if b.target.is_some() {
        if holders.is_empty() {
            let _ = write!(out, ", held by nobody");
        } else {
            let _ = write!(out, ", held by");
            for h in holders {
                let name = tasks
                    .iter()
                    .find(|x| x.id() == *h)
                    .map(|x| x.name())
                    .unwrap_or("?");
                let _ = write!(out, " task '{name}' (id {h})");
            }
        }
    }
    out.push('\n');
}

/// Called by a task that just recorded what it blocks on, before it sleeps:
/// reports and marks a wait-for cycle through it. Interrupts are masked.
pub(crate) fn check_cycle(me: &Task) {
    let tasks = super::all_tasks();
    // Depth-first search over "task -> holders of what it waits on".
    let mut path: Vec<(Arc<Task>, BlockedOn, Vec<TaskId>)> = Vec::new();
    let Some(start) = tasks
        .iter()
        .find(|t| core::ptr::eq(Arc::as_ptr(t), me))
        .cloned()
    else {
        return;
    };
    if dfs(&start, me.id(), &tasks, &mut path, 0) {
        let mut text = String::from(
            "\n======================================================\n\
             DEADLOCK DETECTED: tasks wait for each other in a cycle\n\
             ------------------------------------------------------\n",
        );
        for (t, b, h) in &path {
            describe(&mut text, t, b, h, &tasks);
        }
        text.push_str("======================================================\n");
        crate::println!("{text}");
        let report = DeadlockReport {
            all_blocked: false,
            tasks: path
                .iter()
                .map(|(t, _, _)| (t.id(), String::from(t.name())))
                .collect(),
            locks: path.iter().map(|(_, b, _)| String::from(b.name)).collect(),
            text,
        };
        REPORTS.lock().push(report);
        for (t, _, _) in &path {
            super::mark_deadlocked(t);
        }
    }
}

fn dfs(
    t: &Arc<Task>,
    goal: TaskId,
    tasks: &[Arc<Task>],
    path: &mut Vec<(Arc<Task>, BlockedOn, Vec<TaskId>)>,
    depth: usize,
) -> bool {
    if depth > 32 || t.is_deadlocked() {
        return false;
    }
    let Some((b, holders)) = holders_of(t) else {
        return false;
    };
    path.push((t.clone(), b, holders.clone()));
    for h in holders {
        if h == goal {
            return true;
        }
        if path.iter().any(|(x, _, _)| x.id() == h) {
            continue;
        }
        if let Some(next) = tasks.iter().find(|x| x.id() == h)
            && dfs(next, goal, tasks, path, depth + 1)
        {
            return true;
        }
    }
    path.pop();
    false
}

/// Run by the idle task: if nothing is runnable, no timed wait is pending and
/// every live task is blocked, nothing can ever run again — report it.
pub(crate) fn idle_check() {
    let idle = super::idle_task_ptr();
    let tasks = super::all_tasks();
    let rq_empty =
        crate::platform::without_interrupts(|| super::this_cpu().run_queue.lock().is_empty());
    let live: Vec<&Arc<Task>> = tasks
        .iter()
        .filter(|t| {
            !core::ptr::eq(Arc::as_ptr(t), idle)
                && !t.is_deadlocked()
                && t.state() != TaskState::Dead
        })
        .collect();
    let stuck = rq_empty
        && super::pending_timers() == 0
        && !live.is_empty()
        && live.iter().all(|t| t.state() == TaskState::Blocked);
    if !stuck {
        ALL_BLOCKED_STREAK.store(0, Ordering::Relaxed);
        return;
    }
    // Give interrupt-driven wake-ups a few ticks before declaring defeat.
    if ALL_BLOCKED_STREAK.fetch_add(1, Ordering::Relaxed) < 50 {
        return;
    }
    ALL_BLOCKED_STREAK.store(0, Ordering::Relaxed);
    let mut text = String::from(
        "\n======================================================\n\
         DEADLOCK DETECTED: every task is blocked and nothing can wake them\n\
         ------------------------------------------------------\n",
    );
    let mut locks = Vec::new();
    for t in &live {
        match holders_of(t) {
            Some((b, h)) => {
                describe(&mut text, t, &b, &h, &tasks);
                locks.push(String::from(b.name));
            }
            None => {
                let _ = writeln!(text, "  task '{}' (id {}) is blocked", t.name(), t.id());
            }
        }
    }
    text.push_str("======================================================\n");
    crate::println!("{text}");
    let report = DeadlockReport {
        all_blocked: true,
        tasks: live
            .iter()
            .map(|t| (t.id(), String::from(t.name())))
            .collect(),
        locks,
        text,
    };
    crate::platform::without_interrupts(|| REPORTS.lock().push(report));
    if STOP_ON_ALL_BLOCKED.load(Ordering::Relaxed) {
        panic!("every task is blocked: deadlock (see the report above)");
    }
    for t in live {
        super::mark_deadlocked(t);
    }
}
