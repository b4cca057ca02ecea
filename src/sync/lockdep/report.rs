//! Lockdep reports: printed in Linux's shape, kept for tests to query, and
//! fatal in [`LockdepMode::Fatal`].
//!
//! The validator only copies what it found into a [`Pending`] while it holds
//! the graph lock; the text is built here afterwards, because building it
//! allocates. Every allocation here is fallible: without memory the report
//! is printed as far as it was built and marked truncated, and kept only if
//! there is room to keep it.

use super::graph::{ChainLink, ClassRef, MAX_CHAIN};
use super::held::{Busy, HeldLock, HeldSnapshot, with_current};
use super::{LockClassKey, LockdepMode};
use crate::mm::fallible::{TryString, try_string};
use crate::mm::gfp::AllocError;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::panic::Location;

/// What lockdep found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    /// Two or more classes are taken in orders that form a cycle.
    CircularDependency,
    /// A class is taken while one of the same class (and subclass) is held.
    RecursiveLocking,
    /// A release (or downgrade) of a lock the task does not hold.
    BadUnlock,
    /// A task exited holding locks.
    HeldAtExit,
}

impl ReportKind {
    /// The report's headline, as Linux words it.
    pub fn title(self) -> &'static str {
        match self {
            Self::CircularDependency => "possible circular locking dependency detected",
            Self::RecursiveLocking => "possible recursive locking detected",
            Self::BadUnlock => "bad unlock balance detected!",
            Self::HeldAtExit => "task exited with locks held!",
        }
    }
}

/// One printed report.
#[derive(Clone, Debug)]
pub struct LockdepReport {
    /// What kind of problem was found.
    pub kind: ReportKind,
    /// Every class involved, by [`LockClassKey::name`]: for a cycle, the
    /// lock being taken first and then along the chain to the held one.
    pub classes: Vec<&'static str>,
    /// The task that triggered it.
    pub task: String,
    /// The CPU it was found on ([`Platform::cpu_id`](crate::platform::Platform::cpu_id)).
    pub cpu: usize,
    /// The report as printed.
    pub text: String,
}

static REPORTS: spin::Mutex<Vec<LockdepReport>> = spin::Mutex::new(Vec::new());

/// Every report since boot.
pub fn reports() -> Vec<LockdepReport> {
    reports_since(0)
}

/// Reports after the first `n` (pair with an earlier [`report_count`]).
pub fn reports_since(n: usize) -> Vec<LockdepReport> {
    crate::platform::without_interrupts(|| {
        // Copying allocates under REPORTS: a lock taken by the allocator
        // must not be validated, or a report would take REPORTS again.
        let _busy = Busy::enter();
        let r = REPORTS.lock();
        r.get(n..).map(<[_]>::to_vec).unwrap_or_default()
    })
}

/// [`reports_since`] that reports failure as a value instead of aborting.
pub fn try_reports_since(n: usize) -> Result<Vec<LockdepReport>, AllocError> {
    let nomem = crate::mm::fallible::global_alloc_error;
    crate::platform::without_interrupts(|| {
        let _busy = Busy::enter();
        let r = REPORTS.lock();
        let src = r.get(n..).unwrap_or_default();
        let mut out = Vec::new();
        out.try_reserve_exact(src.len()).map_err(|_| nomem())?;
        for rep in src {
            let mut classes = Vec::new();
            classes
                .try_reserve_exact(rep.classes.len())
                .map_err(|_| nomem())?;
            classes.extend_from_slice(&rep.classes);
            out.push(LockdepReport {
                kind: rep.kind,
                cpu: rep.cpu,
                classes,
                task: try_string(&rep.task)?,
                text: try_string(&rep.text)?,
            });
        }
        Ok(out)
    })
}

/// Number of reports recorded.
pub fn report_count() -> usize {
    crate::platform::without_interrupts(|| REPORTS.lock().len())
}

/// The longest cycle copied into a report.
pub(super) struct Circular {
    pub held: HeldLock,
    pub next: HeldLock,
    /// The existing path `next ->* held`, nearest `held` first.
    pub links: [Option<ChainLink>; MAX_CHAIN],
    /// Its full length (may exceed what `links` holds).
    pub len: usize,
}

/// A problem found by the validator, not yet printed.
// Not boxed: it is built under the graph lock, where lockdep must not allocate.
#[allow(clippy::large_enum_variant)]
pub(super) enum Pending {
    Circular(Circular),
    Recursive {
        prev: HeldLock,
        next: HeldLock,
    },
    BadUnlock {
        key: &'static LockClassKey,
        instance: usize,
        at: &'static Location<'static>,
    },
    HeldAtExit,
}

/// `lock` or `rlock` for a shared hold, as in Linux's scenarios.
fn verb(h: &HeldLock) -> &'static str {
    if h.read { "rlock" } else { "lock" }
}

/// A location, or `?`; formats without allocating.
struct LocOrUnknown(Option<&'static Location<'static>>);

impl fmt::Display for LocOrUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, "{l}"),
            None => f.write_str("?"),
        }
    }
}

fn loc_or_unknown(l: Option<&'static Location<'static>>) -> LocOrUnknown {
    LocOrUnknown(l)
}

/// Counts the bytes formatted through it.
struct Count(usize);

impl Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn header(t: &mut dyn Write, title: fmt::Arguments<'_>) {
    let mut len = Count(0);
    let _ = len.write_fmt(title);
    let bar = |t: &mut dyn Write, c: char| {
        for _ in 0..len.0 + 9 {
            let _ = t.write_char(c);
        }
    };
    let _ = t.write_char('\n');
    bar(t, '=');
    let _ = write!(t, "\nWARNING: {title}\n");
    bar(t, '-');
    let _ = write!(t, "\nreported on CPU#{}\n", crate::platform::cpu_id());
}

/// Appends a class name if there is memory for it (the list is then
/// incomplete, like a truncated text).
fn add_class(classes: &mut Vec<&'static str>, name: &'static str) {
    if classes.try_reserve(1).is_ok() {
        classes.push(name);
    }
}

fn held_locks(t: &mut dyn Write, task: &str, held: &HeldSnapshot) {
    match held.len() {
        0 => {
            let _ = writeln!(t, "no locks held by task '{task}'.");
        }
        n => {
            let s = if n == 1 { "" } else { "s" };
            let _ = writeln!(t, "{n} lock{s} held by task '{task}':");
            for (i, h) in held.iter().enumerate() {
                let _ = writeln!(
                    t,
                    " #{i}: {:#x} ({}){}{}, at: {}",
                    h.instance,
                    h.class_ref(),
                    if h.read { " shared" } else { "" },
                    if h.trylock { " trylock" } else { "" },
                    h.loc
                );
            }
        }
    }
}

fn circular(t: &mut dyn Write, task: &str, c: &Circular, classes: &mut Vec<&'static str>) {
    let (held, next) = (&c.held, &c.next);
    header(
        t,
        format_args!("{}", ReportKind::CircularDependency.title()),
    );
    let _ = write!(
        t,
        "task '{task}' is trying to acquire lock:\n ({}), at: {}\n\n\
         but task is already holding lock:\n ({}), at: {}\n\n\
         which lock already depends on the new lock.\n\n\n\
         the existing dependency chain (in reverse order) is:\n",
        next.class_ref(),
        next.loc,
        held.class_ref(),
        held.loc
    );
    // #len is the held lock, #1 the first step after the new one, #0 the
    // dependency being added now.
    let links = || c.links.iter().flatten();
    let nlinks = links().count();
    for (i, l) in links().enumerate() {
        let _ = write!(
            t,
            "\n-> #{} ({}):\n       acquired at {}\n       while holding ({}) taken at {}\n       \
             first seen by task '{}'\n",
            c.len - i,
            l.to,
            loc_or_unknown(l.to_loc),
            l.from,
            loc_or_unknown(l.from_loc),
            l.task.as_str()
        );
    }
    if c.len > nlinks {
        let _ = writeln!(t, "\n   ... ({} more links)", c.len - nlinks);
    }
    let _ = write!(
        t,
        "\n-> #0 ({}):\n       acquired at {}\n       while holding ({}) taken at {}\n       \
         by task '{task}'\n\nother info that might help us debug this:\n\n",
        next.class_ref(),
        next.loc,
        held.class_ref(),
        held.loc
    );
    // The class just before `held` on the existing path (Linux's "parent").
    let parent: ClassRef = links().next().map_or(next.class_ref(), |l| l.from);
    if c.len > 1 {
        let _ = write!(
            t,
            " Chain exists of:\n   {} --> {} --> {}\n\n",
            next.class_ref(),
            parent,
            held.class_ref()
        );
    }
    let _ = write!(
        t,
        " Possible unsafe locking scenario:\n\n\
         \x20      CPU0                    CPU1\n\
         \x20      ----                    ----\n\
         \x20 {}({});\n\
         \x20                              lock({});\n\
         \x20                              lock({});\n\
         \x20 {}({});\n\n *** DEADLOCK ***\n\n",
        verb(held),
        held.class_ref(),
        parent,
        held.class_ref(),
        verb(next),
        next.class_ref()
    );
    add_class(classes, next.key.name());
    for l in links().rev() {
        add_class(classes, l.to.key.name());
    }
}

fn recursive(t: &mut dyn Write, task: &str, prev: &HeldLock, next: &HeldLock) {
    header(t, format_args!("{}", ReportKind::RecursiveLocking.title()));
    let _ = write!(
        t,
        "task '{task}' is trying to acquire lock:\n ({}), at: {}\n\n\
         but task is already holding lock:\n ({}), at: {}\n\n\
         other info that might help us debug this:\n \
         Possible unsafe locking scenario:\n\n\
         \x20      CPU0\n\
         \x20      ----\n\
         \x20 {}({});\n\
         \x20 {}({});\n\n *** DEADLOCK ***\n\n \
         May be due to missing lock nesting notation\n\n",
        next.class_ref(),
        next.loc,
        prev.class_ref(),
        prev.loc,
        verb(prev),
        prev.class_ref(),
        verb(next),
        next.class_ref()
    );
}

/// Builds, prints and stores the report; panics in [`LockdepMode::Fatal`].
/// Runs with interrupts masked, outside the graph lock, as lockdep ("busy").
#[cold]
#[inline(never)]
pub(super) fn emit(p: Pending) {
    let task = crate::task::current().name();
    let held = with_current(|s| s.snapshot());
    let mut text = String::new();
    let mut t = TryString::new(&mut text);
    let mut classes = Vec::new();
    let kind = match &p {
        Pending::Circular(c) => {
            circular(&mut t, task, c, &mut classes);
            ReportKind::CircularDependency
        }
        Pending::Recursive { prev, next } => {
            recursive(&mut t, task, prev, next);
            add_class(&mut classes, next.key.name());
            ReportKind::RecursiveLocking
        }
        Pending::BadUnlock { key, instance, at } => {
            header(&mut t, format_args!("{}", ReportKind::BadUnlock.title()));
            let _ = write!(
                t,
                "task '{task}' is trying to release lock ({}) @{instance:#x} at:\n{at}\n\
                 but there are no more locks to release!\n\n\
                 other info that might help us debug this:\n",
                key.name()
            );
            add_class(&mut classes, key.name());
            ReportKind::BadUnlock
        }
        Pending::HeldAtExit => {
            header(
                &mut t,
                format_args!("task '{task}' exited with locks held!"),
            );
            for h in held.iter() {
                add_class(&mut classes, h.key.name());
            }
            ReportKind::HeldAtExit
        }
    };
    held_locks(&mut t, task, &held);
    let truncated = t.failed();
    if truncated {
        crate::println!("{text}\n(lockdep report truncated: out of memory)");
    } else {
        crate::println!("{text}");
    }
    let report = LockdepReport {
        kind,
        cpu: crate::platform::cpu_id(),
        classes,
        task: try_string(task).unwrap_or_default(),
        text,
    };
    let mut reports = REPORTS.lock();
    if reports.try_reserve(1).is_ok() {
        reports.push(report);
    } else {
        drop(reports);
        crate::println!("lockdep: out of memory: this report is printed but not kept");
    }
    if super::mode() == LockdepMode::Fatal {
        panic!("lockdep: {} (lockdep=fatal)", kind.title());
    }
}
