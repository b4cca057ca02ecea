//! IDT, entry stubs and the trap dispatcher.
//!
//! Every vector 0..49 (and 255) has a small stub (written in assembly, since
//! `extern "x86-interrupt"` is nightly-only) that pushes a uniform
//! [`TrapFrame`] and calls `trap_dispatch`. CPU exceptions are fatal and
//! reported in plain words; vectors 32..48 are the remapped legacy PIC IRQs,
//! 48 the local APIC timer and 255 the LAPIC's spurious vector.

use super::gdt;
use core::fmt;

/// Saved registers, in the order the common stub pushes them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    /// `r15` at the trap (the stub saves every general-purpose register).
    pub r15: u64,
    /// `r14` at the trap.
    pub r14: u64,
    /// `r13` at the trap.
    pub r13: u64,
    /// `r12` at the trap.
    pub r12: u64,
    /// `r11` at the trap.
    pub r11: u64,
    /// `r10` at the trap.
    pub r10: u64,
    /// `r9` at the trap.
    pub r9: u64,
    /// `r8` at the trap.
    pub r8: u64,
    /// `rbp` at the trap.
    pub rbp: u64,
    /// `rdi` at the trap.
    pub rdi: u64,
    /// `rsi` at the trap.
    pub rsi: u64,
    /// `rdx` at the trap.
    pub rdx: u64,
    /// `rcx` at the trap.
    pub rcx: u64,
    /// `rbx` at the trap.
    pub rbx: u64,
    /// `rax` at the trap.
    pub rax: u64,
    /// The vector (0..49, or 255 for a spurious LAPIC interrupt).
    pub vector: u64,
    /// The CPU's error code; 0 for vectors that have none.
    pub error_code: u64,
    /// Interrupted instruction (this and the fields below: pushed by the CPU).
    pub rip: u64,
    /// Code segment selector.
    pub cs: u64,
    /// Flags register.
    pub rflags: u64,
    /// Interrupted stack pointer.
    pub rsp: u64,
    /// Stack segment selector.
    pub ss: u64,
}

macro_rules! stubs {
    ($($vec:literal $kind:ident),* $(,)?) => {
        core::arch::global_asm!(
            ".section .text.isr, \"ax\"",
            ".macro ISR_NOERR vec",
            "isr_stub_\\vec:",
            "    push 0",
            "    push \\vec",
            "    jmp isr_common",
            ".endm",
            ".macro ISR_ERR vec",
            "isr_stub_\\vec:",
            "    push \\vec",
            "    jmp isr_common",
            ".endm",
            $(concat!("    ", stringify!($kind), " ", stringify!($vec)),)*
            "isr_common:",
            "    push rax",
            "    push rbx",
            "    push rcx",
            "    push rdx",
            "    push rsi",
            "    push rdi",
            "    push rbp",
            "    push r8",
            "    push r9",
            "    push r10",
            "    push r11",
            "    push r12",
            "    push r13",
            "    push r14",
            "    push r15",
            "    mov rdi, rsp",
            "    cld",
            "    call {dispatch}",
            "    pop r15",
            "    pop r14",
            "    pop r13",
            "    pop r12",
            "    pop r11",
            "    pop r10",
            "    pop r9",
            "    pop r8",
            "    pop rbp",
            "    pop rdi",
            "    pop rsi",
            "    pop rdx",
            "    pop rcx",
            "    pop rbx",
            "    pop rax",
            "    add rsp, 16",
            "    iretq",
            ".section .rodata.isr_table, \"a\"",
            ".p2align 3",
            ".global isr_stub_table",
            "isr_stub_table:",
            $(concat!("    .quad isr_stub_", stringify!($vec)),)*
            dispatch = sym trap_dispatch,
        );
    };
}

stubs!(
    0 ISR_NOERR, 1 ISR_NOERR, 2 ISR_NOERR, 3 ISR_NOERR, 4 ISR_NOERR, 5 ISR_NOERR,
    6 ISR_NOERR, 7 ISR_NOERR, 8 ISR_ERR, 9 ISR_NOERR, 10 ISR_ERR, 11 ISR_ERR,
    12 ISR_ERR, 13 ISR_ERR, 14 ISR_ERR, 15 ISR_NOERR, 16 ISR_NOERR, 17 ISR_ERR,
    18 ISR_NOERR, 19 ISR_NOERR, 20 ISR_NOERR, 21 ISR_ERR, 22 ISR_NOERR, 23 ISR_NOERR,
    24 ISR_NOERR, 25 ISR_NOERR, 26 ISR_NOERR, 27 ISR_NOERR, 28 ISR_NOERR, 29 ISR_ERR,
    30 ISR_ERR, 31 ISR_NOERR, 32 ISR_NOERR, 33 ISR_NOERR, 34 ISR_NOERR, 35 ISR_NOERR,
    36 ISR_NOERR, 37 ISR_NOERR, 38 ISR_NOERR, 39 ISR_NOERR, 40 ISR_NOERR, 41 ISR_NOERR,
    42 ISR_NOERR, 43 ISR_NOERR, 44 ISR_NOERR, 45 ISR_NOERR, 46 ISR_NOERR, 47 ISR_NOERR,
    48 ISR_NOERR, 49 ISR_NOERR, 255 ISR_NOERR,
);

/// Stubs in `isr_stub_table`: vectors 0..50, then the spurious vector.
const NUM_STUBS: usize = 51;

/// The vector of stub `i` (see [`NUM_STUBS`]).
fn stub_vector(i: usize) -> usize {
    if i == NUM_STUBS - 1 {
        super::apic::SPURIOUS_VECTOR as usize
    } else {
        i
    }
}

/// First vector of the remapped PIC lines (IRQ 0 is vector 32).
pub const IRQ_BASE: u8 = 32;

unsafe extern "C" {
    static isr_stub_table: [u64; NUM_STUBS];
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(addr: u64, selector: u16, ist: Option<u16>) -> Gate {
        Gate {
            offset_low: addr as u16,
            selector,
            ist: ist.map(|i| i as u8 + 1).unwrap_or(0),
            type_attr: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

/// Builds the IDT (the first time) and loads it on this CPU: every CPU
/// shares the one table.
pub fn init() {
    use x86_64::instructions::segmentation::Segment;
    let cs = x86_64::instructions::segmentation::CS::get_reg();
    let idt = IDT.call_once(|| {
        let mut idt = Idt([Gate::MISSING; 256]);
        // SAFETY: isr_stub_table is a read-only table defined in the asm above.
        let stubs = unsafe { &isr_stub_table };
        for (i, &addr) in stubs.iter().enumerate() {
            let vec = stub_vector(i);
            let ist = match vec {
                2 => Some(gdt::NMI_IST),
                8 => Some(gdt::DOUBLE_FAULT_IST),
                18 => Some(gdt::MCE_IST),
                _ => None,
            };
            idt.0[vec] = Gate::interrupt(addr, cs.0, ist);
        }
        idt
    });
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is 'static and its gates point at valid stubs.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// Handler for a legacy IRQ line (0..16), called with interrupts masked.
pub type IrqHandler = fn(&mut TrapFrame);

static IRQ_HANDLERS: [crate::sync::Hook<IrqHandler>; 16] = [const { crate::sync::Hook::new() }; 16];

/// Installs `handler` for IRQ `line` and unmasks it at the PIC.
pub fn set_irq_handler(line: u8, handler: IrqHandler) {
    IRQ_HANDLERS[line as usize].set(Some(handler));
    super::pic::unmask(line);
}

extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vec = frame.vector as u8;
    if vec < IRQ_BASE {
        fatal_exception(frame);
    }
    // A task interrupted between reading its CPU and taking that CPU's
    // sheaf flag (a pinned stretch of the slab's fast path) stays pinned
    // while the handler runs: the tick does not preempt it and a remote
    // taker's barrier IPI is not answered inside the stretch.
    let pinned = crate::platform::in_pinned_section(frame.rip as usize);
    if pinned {
        super::smp::pin_interrupted(true);
    }
    irq_dispatch(frame, vec);
    if pinned {
        super::smp::pin_interrupted(false);
    }
}

/// [`trap_dispatch`] for an interrupt (vector `vec`, at or above
/// `IRQ_BASE`).
fn irq_dispatch(frame: &mut TrapFrame, vec: u8) {
    if vec == super::apic::TIMER_VECTOR {
        super::smp::on_lapic_timer();
        // Before the tick hook, which may switch to another task.
        super::apic::eoi();
        crate::task::on_tick();
        return;
    }
    if vec == super::apic::RESCHED_VECTOR {
        super::smp::tlb_sync_local();
        super::smp::membarrier_ack_local();
        super::apic::eoi();
        crate::task::on_resched_ipi();
        return;
    }
    if vec == super::apic::SPURIOUS_VECTOR {
        return; // no EOI for a spurious LAPIC interrupt
    }
    let line = vec - IRQ_BASE;
    let h = IRQ_HANDLERS[line as usize].get();
    super::pic::eoi(line);
    // The boot CPU's tick (PIT) answers barrier requests as the APs' do.
    super::smp::membarrier_ack_local();
    if let Some(h) = h {
        h(frame);
    }
}

/// Names of the CPU exceptions, by vector.
pub const EXCEPTION_NAMES: [&str; 32] = [
    "Divide error (#DE)",
    "Debug (#DB)",
    "Non-maskable interrupt (NMI)",
    "Breakpoint (#BP)",
    "Overflow (#OF)",
    "Bound range exceeded (#BR)",
    "Invalid opcode (#UD)",
    "Device not available (#NM)",
    "Double fault (#DF)",
    "Coprocessor segment overrun",
    "Invalid TSS (#TS)",
    "Segment not present (#NP)",
    "Stack-segment fault (#SS)",
    "General protection fault (#GP)",
    "Page fault (#PF)",
    "Reserved (15)",
    "x87 floating-point error (#MF)",
    "Alignment check (#AC)",
    "Machine check (#MC)",
    "SIMD floating-point error (#XM)",
    "Virtualization exception (#VE)",
    "Control protection (#CP)",
    "Reserved (22)",
    "Reserved (23)",
    "Reserved (24)",
    "Reserved (25)",
    "Reserved (26)",
    "Reserved (27)",
    "Hypervisor injection (#HV)",
    "VMM communication (#VC)",
    "Security exception (#SX)",
    "Reserved (31)",
];

/// What a fatal CPU exception looked like; handed to the fault hook.
#[derive(Debug, Clone, Copy)]
pub struct FaultReport {
    /// Exception vector (0..32).
    pub vector: u8,
    /// The CPU's error code (0 when none).
    pub error_code: u64,
    /// Faulting instruction.
    pub rip: u64,
    /// Stack pointer at the fault.
    pub rsp: u64,
    /// Faulting address (page faults, and double faults caused by one).
    pub cr2: Option<u64>,
    /// Name of the stack whose guard page was hit, if this was an overflow.
    pub stack_overflow: Option<crate::mm::inline_name::InlineName>,
}

impl FaultReport {
    /// The exception's name, e.g. "Page fault (#PF)".
    pub fn name(&self) -> &'static str {
        EXCEPTION_NAMES[self.vector as usize & 31]
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(stack) = self.stack_overflow {
            writeln!(
                f,
                "KERNEL STACK OVERFLOW: the '{stack}' stack ran into its guard page at {:#x}",
                self.cr2.unwrap_or(0)
            )?;
        }
        write!(
            f,
            "CPU EXCEPTION: {} (vector {}), error code {:#x}, at RIP {:#x}, RSP {:#x}",
            self.name(),
            self.vector,
            self.error_code,
            self.rip,
            self.rsp
        )?;
        if self.vector == 14 {
            let e = self.error_code;
            write!(
                f,
                "\n  page fault: {} of address {:#x}: {}{}{}",
                if e & 0x10 != 0 {
                    "instruction fetch"
                } else if e & 2 != 0 {
                    "write"
                } else {
                    "read"
                },
                self.cr2.unwrap_or(0),
                if e & 1 != 0 {
                    "protection violation on a present page"
                } else {
                    "page not present"
                },
                if e & 4 != 0 {
                    ", user mode"
                } else {
                    ", kernel mode"
                },
                if e & 8 != 0 { ", reserved bit set" } else { "" },
            )?;
        }
        if self.vector == 8 && self.stack_overflow.is_none() {
            write!(
                f,
                "\n  double fault, last page-fault address {:#x}",
                self.cr2.unwrap_or(0)
            )?;
        }
        Ok(())
    }
}

/// Called with the report of a fatal exception instead of the default
/// "print and exit QEMU with failure" (expected-fault test kernels use it).
pub type FaultHook = fn(&FaultReport) -> !;

static FAULT_HOOK: crate::sync::Hook<FaultHook> = crate::sync::Hook::new();

/// Installs the fault hook (see [`FaultHook`]).
pub fn set_fault_hook(hook: FaultHook) {
    FAULT_HOOK.set(Some(hook));
}

fn fatal_exception(frame: &TrapFrame) -> ! {
    let vector = frame.vector as u8;
    let cr2 = match vector {
        8 | 14 => Some(x86_64::registers::control::Cr2::read_raw()),
        _ => None,
    };
    let stack_overflow = match vector {
        8 | 14 => cr2.and_then(super::stacks::guard_page_owner),
        _ => None,
    };
    let report = FaultReport {
        vector,
        error_code: frame.error_code,
        rip: frame.rip,
        rsp: frame.rsp,
        cr2,
        stack_overflow,
    };
    // SAFETY: we never return to the interrupted code.
    unsafe { crate::console::force_unlock() };
    if super::smp::cpu_id() != 0 {
        // This AP never runs a task again: place none on it.
        crate::task::cpu_dying();
        super::smp::mark_dead();
    }
    if let Some(hook) = FAULT_HOOK.get() {
        hook(&report);
    }
    crate::println!("{report}");
    super::fatal_exit()
}
