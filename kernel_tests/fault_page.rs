//! A page fault on an unmapped address is reported with that address.

#![no_std]
#![no_main]

use kreclaim::arch::x86_64::interrupts::{FaultReport, set_fault_hook};
use kreclaim::bootinfo::BootInfo;

const ADDR: u64 = 0xdead_b008;

kreclaim::entry_point!(main);

fn main(boot: &'static BootInfo) -> ! {
    kreclaim::harness::run_expecting_end(boot, "page_fault_reported_with_address", || {
        set_fault_hook(check);
        // SAFETY: deliberately faults; the hook ends the kernel.
        unsafe { (ADDR as *mut u64).write_volatile(1) };
    })
}

fn check(r: &FaultReport) -> ! {
    let text = alloc::format!("{r}");
    kreclaim::println!("{text}");
    let expect = alloc::format!("write of address {ADDR:#x}: page not present");
    if r.vector == 14 && r.cr2 == Some(ADDR) && r.error_code & 2 != 0 && text.contains(&expect) {
        kreclaim::harness::pass_current_and_finish()
    }
    kreclaim::harness::abort_current(format_args!("unexpected report, wanted '{expect}'"))
}

extern crate alloc;
