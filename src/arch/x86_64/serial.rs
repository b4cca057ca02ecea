//! The 16550 UARTs: COM1 (0x3F8), the kernel console on QEMU's `-serial
//! stdio`, and COM2 (0x2F8), which tools/qemu-run routes to its standard
//! error: with `format=json` the human console moves there and COM1 carries
//! only JSON lines.

use core::fmt;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3F8;
const COM2: u16 = 0x2F8;

/// A 16550 UART at an IO port base.
pub struct Serial {
    base: u16,
}

impl Serial {
    /// The COM1 UART (not yet initialised).
    pub const fn com1() -> Self {
        Self { base: COM1 }
    }

    /// The COM2 UART (not yet initialised).
    pub const fn com2() -> Self {
        Self { base: COM2 }
    }

    /// Writes `s` byte for byte, `\n` without a `\r` before it: for
    /// output read by programs rather than terminals.
    pub fn write_raw(&mut self, s: &str) {
        for b in s.bytes() {
            self.write_byte(b);
        }
    }

    /// 115200 baud, 8N1, FIFO on, interrupts off.
    pub fn init(&mut self) {
        let b = self.base;
        // SAFETY: the UART's registers; QEMU's PC machine always has COM1 and
        // COM2 (an unconnected port discards what is written).
        unsafe {
            Port::<u8>::new(b + 1).write(0x00);
            Port::<u8>::new(b + 3).write(0x80);
            Port::<u8>::new(b).write(0x01);
            Port::<u8>::new(b + 1).write(0x00);
            Port::<u8>::new(b + 3).write(0x03);
            Port::<u8>::new(b + 2).write(0xC7);
            Port::<u8>::new(b + 4).write(0x0B);
        }
    }

    fn write_byte(&mut self, byte: u8) {
        // SAFETY: the UART's line-status and data registers.
        unsafe {
            let mut lsr = Port::<u8>::new(self.base + 5);
            while lsr.read() & 0x20 == 0 {
                core::hint::spin_loop();
            }
            Port::<u8>::new(self.base).write(byte);
        }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
