//! The local APIC (xAPIC, memory mapped): start-up IPIs and the per-CPU
//! timer.
//!
//! The boot CPU keeps the legacy PIC and the PIT for its tick (the LAPIC
//! leaves its LINT0 in ExtINT mode, which is how PIC interrupts reach it);
//! it enables its LAPIC only to send IPIs and to calibrate the LAPIC timer
//! against the PIT. Each AP runs its LAPIC timer periodically at
//! [`AP_TICK_HZ`] on [`TIMER_VECTOR`].

use super::paging;
use core::sync::atomic::{AtomicU64, Ordering};

/// Vector of the LAPIC timer (right after the 16 PIC vectors).
pub const TIMER_VECTOR: u8 = 48;
/// Vector of the reschedule IPI (a task was queued on this CPU by another).
pub const RESCHED_VECTOR: u8 = 49;
/// Vector of spurious LAPIC interrupts (low nibble all ones, as old CPUs need).
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// Rate of an AP's LAPIC timer: slow, since APs only count ticks for now.
pub const AP_TICK_HZ: u64 = 100;

/// Where the LAPIC's registers are mapped (a page of the SMP fixmap area).
pub const LAPIC_VA: u64 = super::smp::FIXMAP_BASE;

const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const ICR_PENDING: u32 = 1 << 12;
const IA32_APIC_BASE: u32 = 0x1B;

/// LAPIC timer counts per AP tick (at divide-by-16); 0 until calibrated.
static COUNTS_PER_TICK: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    // SAFETY: LAPIC_VA maps the LAPIC page (map_lapic runs before any
    // register access); `reg` is a register offset inside that page.
    unsafe { core::ptr::read_volatile((LAPIC_VA + reg as u64) as *const u32) }
}

fn write(reg: u32, v: u32) {
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((LAPIC_VA + reg as u64) as *mut u32, v) }
}

/// Physical address of this CPU's LAPIC, from IA32_APIC_BASE.
fn phys_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every CPU with a LAPIC (all x86_64).
    let v = unsafe { x86_64::registers::model_specific::Msr::new(IA32_APIC_BASE).read() };
    v & 0x000f_ffff_ffff_f000
}

/// Maps the LAPIC page (uncached) at [`LAPIC_VA`]; once, on the boot CPU.
/// Every CPU's LAPIC answers at the same physical address.
pub fn map_lapic() {
    paging::map_mmio(LAPIC_VA, phys_base());
}

/// This CPU's LAPIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Software-enables this CPU's LAPIC with the spurious vector, accepting
/// every priority. LINT0/LINT1 are left as they are on the boot CPU (LINT0
/// carries the PIC) and masked on APs.
pub fn enable(is_ap: bool) {
    if is_ap {
        write(REG_LVT_LINT0, LVT_MASKED);
        write(REG_LVT_LINT1, LVT_MASKED);
    }
    write(REG_LVT_ERROR, LVT_MASKED);
    write(REG_TPR, 0);
    write(REG_SVR, 0x100 | SPURIOUS_VECTOR as u32);
}

/// Acknowledges the interrupt being handled.
pub fn eoi() {
    write(REG_EOI, 0);
}

fn wait_icr_idle() {
    while read(REG_ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
}

fn send_ipi(apic_id: u32, low: u32) {
    // Masked: an interrupt handler sending an IPI between the two writes
    // would change the destination under us.
    crate::platform::without_interrupts(|| {
        wait_icr_idle();
        write(REG_ICR_HIGH, apic_id << 24);
        write(REG_ICR_LOW, low);
        wait_icr_idle();
    })
}

/// Sends the reschedule IPI ([`RESCHED_VECTOR`], fixed delivery) to `apic_id`.
pub fn send_resched(apic_id: u32) {
    send_ipi(apic_id, 0x0000_4000 | RESCHED_VECTOR as u32);
}

/// Sends INIT (assert) to `apic_id`: the CPU resets and waits for a SIPI.
pub fn send_init(apic_id: u32) {
    send_ipi(apic_id, 0x0000_4500);
}

/// Sends a start-up IPI: the CPU starts in real mode at `page << 12`.
pub fn send_sipi(apic_id: u32, page: u8) {
    send_ipi(apic_id, 0x0000_4600 | page as u32);
}

/// Calibrates the LAPIC timer against the PIT tick (the boot CPU's time
/// source): counts the LAPIC timer runs down, masked, over 10 ticks.
/// Needs the PIT running and interrupts enabled.
pub fn calibrate_timer() {
    const SPAN_TICKS: u64 = 10;
    write(REG_TIMER_DIVIDE, 0x3); // divide by 16
    write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    let t = super::timer::ticks();
    while super::timer::ticks() == t {
        x86_64::instructions::hlt();
    }
    let start_tick = t + 1;
    write(REG_TIMER_INIT, u32::MAX);
    while super::timer::ticks() < start_tick + SPAN_TICKS {
        x86_64::instructions::hlt();
    }
    let ran = u32::MAX - read(REG_TIMER_CURRENT);
    write(REG_TIMER_INIT, 0);
    let per_sec = ran as u64 * super::timer::TICK_HZ / SPAN_TICKS;
    COUNTS_PER_TICK.store((per_sec / AP_TICK_HZ).max(1), Ordering::Relaxed);
}

/// LAPIC timer counts per AP tick, as calibrated (0 before).
pub fn counts_per_tick() -> u64 {
    COUNTS_PER_TICK.load(Ordering::Relaxed)
}

/// Starts this CPU's LAPIC timer, periodic at [`AP_TICK_HZ`].
pub fn start_periodic_timer() {
    write(REG_TIMER_DIVIDE, 0x3);
    write(REG_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR as u32);
    write(
        REG_TIMER_INIT,
        counts_per_tick().clamp(1, u32::MAX as u64) as u32,
    );
}
