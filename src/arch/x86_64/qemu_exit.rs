//! QEMU's isa-debug-exit device (iobase 0xf4): writing v exits QEMU with
//! status (v << 1) | 1. The runner maps 0x10 (status 33) to success.

use x86_64::instructions::port::Port;

/// The value written to isa-debug-exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// QEMU exits with status 33, which the runner reports as success.
    Success = 0x10,
    /// QEMU exits with status 35: failure.
    Failure = 0x11,
}

/// Leaves QEMU with `code`. Without the exit device (another VM setup) the CPU
/// halts forever with interrupts off.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is the debug-exit device set up by tools/qemu-run.
    unsafe { Port::<u32>::new(0xf4).write(code as u32) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
