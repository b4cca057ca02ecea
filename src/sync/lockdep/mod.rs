//! Lockdep: the lock validator. (Interface placeholder; the implementation
//! lands with the lockdep work item.)
//!
//! Lock types call [`lock_acquire`] before they try to take a lock (so a
//! would-be deadlock is reported before it hangs) and [`lock_release`] when
//! they let go. Every lock belongs to a class named by a static
//! [`LockClassKey`]; all locks initialised from one place share a class.

use core::panic::Location;
use core::sync::atomic::{AtomicU32, Ordering};

/// Whether lockdep runs, and what a report does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockdepMode {
    /// Validate and print reports (the default).
    On,
    /// No validation at all.
    Off,
    /// Validate; a report also fails the kernel (a test failure).
    Fatal,
}

static MODE: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

pub fn set_mode(m: LockdepMode) {
    MODE.store(m as u8, Ordering::Relaxed);
}

pub fn mode() -> LockdepMode {
    match MODE.load(Ordering::Relaxed) {
        0 => LockdepMode::On,
        1 => LockdepMode::Off,
        _ => LockdepMode::Fatal,
    }
}

/// A lock class: one per place that initialises locks (Linux's
/// `lock_class_key`). Create them with [`lock_class!`](crate::lock_class).
pub struct LockClassKey {
    name: &'static str,
    id: AtomicU32,
}

impl LockClassKey {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            id: AtomicU32::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Class number, assigned on first use (0 = not yet registered).
    pub fn id(&self) -> u32 {
        self.id.load(Ordering::Relaxed)
    }
}

/// A static lock class named `$name`, unique to the call site.
#[macro_export]
macro_rules! lock_class {
    ($name:expr) => {{
        static __KEY: $crate::sync::lockdep::LockClassKey =
            $crate::sync::lockdep::LockClassKey::new($name);
        &__KEY
    }};
}

/// The lockdep view of one lock instance, embedded in every lock.
pub struct LockdepMap {
    key: &'static LockClassKey,
}

impl LockdepMap {
    pub const fn new(key: &'static LockClassKey) -> Self {
        Self { key }
    }

    pub fn class(&self) -> &'static LockClassKey {
        self.key
    }
}

/// How a lock is being acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquire {
    /// Shared (reader) acquisition of a rw lock.
    pub read: bool,
    /// A trylock: adds no dependency edge, is not checked for deadlock, but
    /// is pushed on the held stack.
    pub trylock: bool,
    /// Nesting annotation (`*_nested`): subclasses of one class are ordered.
    pub subclass: u8,
}

impl Acquire {
    pub const EXCLUSIVE: Acquire = Acquire {
        read: false,
        trylock: false,
        subclass: 0,
    };
    pub const SHARED: Acquire = Acquire {
        read: true,
        trylock: false,
        subclass: 0,
    };
    pub const fn try_(self) -> Self {
        Self {
            trylock: true,
            ..self
        }
    }
    pub const fn nested(self, subclass: u8) -> Self {
        Self { subclass, ..self }
    }
}

/// Per-task lockdep state (the held-lock stack), stored in each task.
pub struct TaskLockState {
    _private: (),
}

impl TaskLockState {
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl Default for TaskLockState {
    fn default() -> Self {
        Self::new()
    }
}

/// Records that the current task is acquiring `map` (instance `instance`).
pub fn lock_acquire(
    map: &LockdepMap,
    instance: usize,
    how: Acquire,
    loc: &'static Location<'static>,
) {
    let _ = (map, instance, how, loc);
}

/// Records that the current task released `map` (instance `instance`).
pub fn lock_release(map: &LockdepMap, instance: usize, loc: &'static Location<'static>) {
    let _ = (map, instance, loc);
}

/// Turns the current task's exclusive hold of `instance` into a shared one.
pub fn lock_downgrade(map: &LockdepMap, instance: usize, loc: &'static Location<'static>) {
    let _ = (map, instance, loc);
}

/// Called when a task exits: reports locks still held.
pub fn task_exit_check(task: &crate::task::Task) {
    let _ = task;
}
