//! Monotonic time as the platform reports it.

#![deny(missing_docs)]

use core::time::Duration;

/// Nanoseconds since boot (0 before a platform is installed).
#[inline]
pub fn now_ns() -> u64 {
    crate::platform::get().map(|p| p.now_ns()).unwrap_or(0)
}

/// Time since boot.
pub fn now() -> Duration {
    Duration::from_nanos(now_ns())
}

/// Cycle counter for benchmarks.
#[inline]
pub fn cycles() -> u64 {
    crate::platform::get().map(|p| p.cycles()).unwrap_or(0)
}
