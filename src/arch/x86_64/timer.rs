//! The periodic tick (PIT channel 0 on IRQ 0) and the monotonic clock.
//!
//! The PIT gives a dependable 1 kHz tick under QEMU's TCG; the TSC, calibrated
//! against it at boot, gives the clock nanosecond resolution between ticks.

use super::interrupts::{self, TrapFrame};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// Timer ticks per second.
pub const TICK_HZ: u64 = 1000;
const PIT_HZ: u64 = 1_193_182;

static TICKS: AtomicU64 = AtomicU64::new(0);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);
/// TSC cycles per millisecond; 0 until calibrated (then the tick count is used).
static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);

/// Called on every tick after the clock advanced (the scheduler's hook).
pub type TickHook = fn(&mut TrapFrame);
static TICK_HOOK: crate::sync::Hook<TickHook> = crate::sync::Hook::new();

/// Installs the tick hook (see [`TickHook`]).
pub fn set_tick_hook(hook: TickHook) {
    TICK_HOOK.set(Some(hook));
}

/// Reads the CPU's time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn on_tick(frame: &mut TrapFrame) {
    TICKS.fetch_add(1, Ordering::Relaxed);
    if let Some(h) = TICK_HOOK.get() {
        h(frame);
    }
}

/// Number of timer ticks since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Programs the PIT, enables its IRQ and interrupts, then calibrates the TSC.
pub fn init() {
    let divisor = (PIT_HZ / TICK_HZ) as u16;
    // SAFETY: PIT mode/command and channel-0 data ports.
    unsafe {
        Port::<u8>::new(0x43).write(0x34); // channel 0, lo/hi, rate generator
        Port::<u8>::new(0x40).write(divisor as u8);
        Port::<u8>::new(0x40).write((divisor >> 8) as u8);
    }
    interrupts::set_irq_handler(0, on_tick);
    x86_64::instructions::interrupts::enable();
    calibrate_tsc();
}

fn wait_tick_edge() -> u64 {
    let t = ticks();
    while ticks() == t {
        x86_64::instructions::hlt();
    }
    t + 1
}

fn calibrate_tsc() {
    const SPAN: u64 = 20;
    let start_tick = wait_tick_edge();
    let start = rdtsc();
    while ticks() < start_tick + SPAN {
        x86_64::instructions::hlt();
    }
    let span_ms = SPAN * 1000 / TICK_HZ;
    let per_ms = (rdtsc() - start) / span_ms;
    // Anchor the TSC clock to the tick clock so both agree at this instant.
    let now_tsc = rdtsc();
    let elapsed_ms = ticks() * 1000 / TICK_HZ;
    TSC_BASE.store(
        now_tsc.saturating_sub(elapsed_ms * per_ms.max(1)),
        Ordering::Relaxed,
    );
    TSC_PER_MS.store(per_ms.max(1), Ordering::Release);
}

/// TSC cycles per millisecond (0 before calibration).
pub fn tsc_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Acquire)
}

/// Monotonic nanoseconds since the timer started.
pub fn now_ns() -> u64 {
    let per_ms = TSC_PER_MS.load(Ordering::Acquire);
    if per_ms == 0 {
        return ticks() * (1_000_000_000 / TICK_HZ);
    }
    let d = rdtsc().saturating_sub(TSC_BASE.load(Ordering::Relaxed)) as u128;
    (d * 1_000_000 / per_ms as u128) as u64
}
