//! Unbounded recursion runs into the boot stack's guard page and is reported
//! as a stack overflow by the double-fault handler on its IST stack.

#![no_std]
#![no_main]

extern crate alloc;

use kreclaim::arch::x86_64::interrupts::{FaultReport, set_fault_hook};
use kreclaim::bootinfo::BootInfo;

kreclaim::entry_point!(main);

fn main(boot: &'static BootInfo) -> ! {
    kreclaim::harness::run_expecting_end(boot, "stack_overflow_reported_by_double_fault", || {
        set_fault_hook(check);
        recurse(0);
    })
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [depth; 64];
    core::hint::black_box(&mut frame);
    recurse(depth + 1) + frame[3]
}

fn check(r: &FaultReport) -> ! {
    let text = alloc::format!("{r}");
    kreclaim::println!("{text}");
    if r.vector == 8
        && r.stack_overflow.is_some_and(|s| s == "boot")
        && text.contains("KERNEL STACK OVERFLOW")
    {
        kreclaim::harness::pass_current_and_finish()
    }
    kreclaim::harness::abort_current(format_args!("wanted a double fault naming the boot stack"))
}
