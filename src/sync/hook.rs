//! A replaceable, typed function-pointer hook.
//!
//! Hooks used to be `AtomicUsize`s holding a function pointer that every
//! call `transmute`d back; a [`Hook`] keeps the pointer's type, so no
//! `unsafe` is needed to call it.

use crate::platform::IrqGuard;
use core::sync::atomic::{AtomicBool, Ordering};

/// A function pointer (or any small `Copy` value) that may be installed,
/// replaced or cleared at any time and read from any context, interrupt
/// handlers included.
///
/// The lock is held only to copy the value, never while the hook runs.
/// Writers mask interrupts while they hold it, so an interrupt handler on the
/// writer's CPU never finds it write-locked; readers never wait for each
/// other.
pub struct Hook<F: Copy> {
    f: spin::RwLock<Option<F>>,
    /// Whether something is installed: lets [`Hook::get`] answer "nothing"
    /// with one load, without touching the lock (hot paths ask often).
    installed: AtomicBool,
}

impl<F: Copy> Hook<F> {
    /// A hook with nothing installed.
    pub const fn new() -> Self {
        Self {
            f: spin::RwLock::new(None),
            installed: AtomicBool::new(false),
        }
    }

    /// Installs `f` (`None`: clears the hook).
    pub fn set(&self, f: Option<F>) {
        let _irq = IrqGuard::new();
        let mut w = self.f.write();
        *w = f;
        self.installed.store(f.is_some(), Ordering::Release);
    }

    /// The installed hook, if any.
    #[inline]
    pub fn get(&self) -> Option<F> {
        if !self.installed.load(Ordering::Acquire) {
            return None;
        }
        *self.f.read()
    }
}

impl<F: Copy> Default for Hook<F> {
    fn default() -> Self {
        Self::new()
    }
}
