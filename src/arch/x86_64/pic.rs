//! The legacy 8259 PIC pair, remapped to vectors 32..48, all lines masked
//! until a handler is installed.

use super::interrupts::IRQ_BASE;
use x86_64::instructions::port::Port;

const PIC1: u16 = 0x20;
const PIC2: u16 = 0xA0;

static MASK: spin::Mutex<u16> = spin::Mutex::new(0xFFFF);

fn outb(port: u16, v: u8) {
    // SAFETY: PIC command/data ports.
    unsafe { Port::<u8>::new(port).write(v) };
}

/// Remaps both PICs to vectors 32..48 and restores the line mask.
pub fn init() {
    outb(PIC1, 0x11);
    outb(PIC2, 0x11);
    outb(PIC1 + 1, IRQ_BASE);
    outb(PIC2 + 1, IRQ_BASE + 8);
    outb(PIC1 + 1, 4);
    outb(PIC2 + 1, 2);
    outb(PIC1 + 1, 0x01);
    outb(PIC2 + 1, 0x01);
    write_mask(*MASK.lock());
}

fn write_mask(mask: u16) {
    outb(PIC1 + 1, mask as u8);
    outb(PIC2 + 1, (mask >> 8) as u8);
}

/// Lets IRQ `line` (0..16) through (and the cascade for the second PIC).
pub fn unmask(line: u8) {
    crate::platform::without_interrupts(|| {
        let mut m = MASK.lock();
        *m &= !(1 << line);
        if line >= 8 {
            *m &= !(1 << 2); // cascade
        }
        write_mask(*m);
    });
}

/// Acknowledges IRQ `line` (end of interrupt).
pub fn eoi(line: u8) {
    if line >= 8 {
        outb(PIC2, 0x20);
    }
    outb(PIC1, 0x20);
}
