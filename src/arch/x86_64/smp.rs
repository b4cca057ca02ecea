//! Bringing up the other CPUs (application processors, APs) and per-CPU
//! data through the GS base.
//!
//! At boot the boot CPU (BSP) reads the ACPI MADT ([`super::acpi`]) for the
//! enabled local APICs, reserves a real-mode trampoline page below 1 MiB
//! and the APs' stacks from boot memory (neither ever reaches the page
//! allocator), calibrates the LAPIC timer against the PIT, and starts the
//! APs one at a time with INIT-SIPI-SIPI. The trampoline (16-bit -> 32-bit
//! -> 64-bit, on the kernel's own page tables) calls `ap_entry` on the
//! AP's kernel stack; the AP loads its own GDT and TSS (with its IST
//! stacks), the shared IDT, points its GS base at its [`CpuData`], starts
//! its LAPIC timer and reports itself online. The BSP waits for each AP at
//! most [`AP_START_TIMEOUT_NS`]; an AP that does not answer is named by its
//! APIC id, sent INIT again (so it cannot wake up later on a stack the
//! next AP owns) and left out.
//!
//! Once the scheduler runs (`task::init` made an idle task for each AP),
//! each AP turns its boot stack into its idle task (`task::run_idle`) and
//! runs tasks from its own run queue; its LAPIC timer drives the tick
//! (preemption), and the reschedule IPI ([`send_reschedule`]) wakes it
//! when another CPU queues a task on it. [`call_on_ap`] hands a function
//! to an AP's idle loop.
//!
//! TLB: kernel mappings change only in the task-stack area (stacks mapped
//! at spawn and unmapped at reaping) and the trampoline page. Freed stack
//! slots are reused only once every CPU has flushed its TLB since the
//! unmap ([`tlb_bump`], [`tlb_all_flushed`]): each CPU flushes at its tick
//! or at a reschedule IPI when the global generation moved, and
//! [`tlb_wait`] asks for it with IPIs when no clean slot is left.

use super::{apic, gdt, paging};
use crate::bootinfo::BootInfo;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Asks the runner (`tools/qemu-run`) to boot this kernel with `$n` CPUs
/// (QEMU `-smp $n`) instead of its default of 2; a `-smp` in
/// `KRECLAIM_QEMU_ARGS` still wins. Use once, at the top level of a test
/// kernel: `kreclaim::qemu_cpus!(4);`. It leaves a marker string in the
/// image, which the runner finds with `grep`.
#[macro_export]
macro_rules! qemu_cpus {
    ($n:literal) => {
        #[used]
        #[unsafe(link_section = ".kreclaim_qemu_cpus")]
        static KRECLAIM_QEMU_CPUS: &str = concat!("kreclaim-qemu", "-cpus=", $n, ";");
    };
}

/// Most CPUs brought up (the boot CPU included); further MADT entries stay off.
pub const MAX_CPUS: usize = 16;

/// Start of the SMP fixmap area (PML4 slot 320): the LAPIC page, then the
/// APs' stacks.
pub const FIXMAP_BASE: u64 = 0xffff_a000_0000_0000;
/// Where the APs' stacks are mapped: CPU `n` has `[AP_STACKS_VA + n *
/// AP_SLOT, + AP_SLOT)`.
const AP_STACKS_VA: u64 = FIXMAP_BASE + (2 << 20);
/// Virtual span per AP: four guarded stacks, then unmapped space.
const AP_SLOT: u64 = 128 * 1024;
/// Usable bytes of an AP's kernel stack (idle loop, interrupts, fault reports).
pub const AP_KERNEL_STACK_BYTES: usize = 32 * 1024;
/// Usable bytes of each of an AP's IST stacks (double fault, NMI, machine check).
pub const AP_IST_STACK_BYTES: usize = 16 * 1024;
/// RAM each AP's stacks take (guard pages are only virtual).
pub const AP_STACK_BYTES: usize = AP_KERNEL_STACK_BYTES + 3 * AP_IST_STACK_BYTES;
/// How long the BSP waits for one AP to come online (guest time; Linux
/// waits 10 s too): generous, since a loaded host may not run the AP's
/// thread for a while.
pub const AP_START_TIMEOUT_NS: u64 = 10_000_000_000;

const PAGE: u64 = 4096;
const IA32_GS_BASE: u32 = 0xC000_0101;

/// One CPU's own data; the CPU's GS base points at it. The first two words
/// are read with `gs:` loads by [`this_cpu`] and [`cpu_id`]. Aligned to a
/// 128-byte line pair ([`crate::platform::PREFETCH_PAIR`]): each CPU writes
/// its own (preempt count, ticks), and neighbours in `CPUS` must not share a
/// pair that x86 prefetches as one.
#[repr(C, align(128))]
pub struct CpuData {
    this: AtomicUsize,
    cpu_id: AtomicUsize,
    apic_id: AtomicU32,
    online: AtomicBool,
    ticks: AtomicU64,
    gs_cpu_id: AtomicUsize,
    entry_rsp: AtomicUsize,
    gdt_base: AtomicU64,
    idt_base: AtomicU64,
    /// A `fn()` handed over by [`call_on_ap`], 0 when none.
    call: AtomicUsize,
    /// The TLB generation this CPU flushed last ([`tlb_sync_local`]).
    tlb_gen: AtomicU64,
    /// Halted for good after a fatal fault: it runs nothing, not even a
    /// TLB flush.
    dead: AtomicBool,
    /// `cpu_id * 64`: this CPU's byte offset into per-CPU arrays whose
    /// entries are a cache line each (the slab's per-CPU sheaves), read
    /// with one `gs:` load by the slab's fast paths
    /// (`platform::cpu_line_offset_fast`).
    line_offset: AtomicUsize,
    /// The scheduler's preempt count of the task running here (the
    /// framework's word: `task::preempt_disable` is one `inc` of it through
    /// `gs:`, `platform::preempt_count_inc_gs`).
    preempt_count: AtomicUsize,
    /// The last [`membarrier_cpu`] request this CPU answered (executed a
    /// full barrier after seeing it).
    mb_ack: AtomicU64,
}

impl CpuData {
    const fn new() -> Self {
        Self {
            this: AtomicUsize::new(0),
            cpu_id: AtomicUsize::new(0),
            apic_id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            gs_cpu_id: AtomicUsize::new(usize::MAX),
            entry_rsp: AtomicUsize::new(0),
            gdt_base: AtomicU64::new(0),
            idt_base: AtomicU64::new(0),
            call: AtomicUsize::new(0),
            tlb_gen: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            line_offset: AtomicUsize::new(0),
            preempt_count: AtomicUsize::new(0),
            mb_ack: AtomicU64::new(0),
        }
    }

    /// This CPU's number: 0 for the boot CPU, then MADT order.
    pub fn cpu_id(&self) -> usize {
        self.cpu_id.load(Ordering::Relaxed)
    }

    /// Its local APIC id.
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// The preempt count of the task running on this CPU, read from its
    /// field by name (tests check that `task::preempt_disable` changes this
    /// very word, the one at `platform::KERNEL_PREEMPT_COUNT_GS_OFFSET`).
    pub fn preempt_count(&self) -> usize {
        self.preempt_count.load(Ordering::Relaxed)
    }

    /// Whether it came up.
    pub fn online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// LAPIC timer interrupts it has taken (APs; the boot CPU ticks on the PIT).
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// The CPU number the CPU itself read through its GS base when it
    /// started (`usize::MAX` before).
    pub fn gs_cpu_id(&self) -> usize {
        self.gs_cpu_id.load(Ordering::Relaxed)
    }

    /// Its stack pointer on entering Rust code (APs; 0 for the boot CPU).
    pub fn entry_rsp(&self) -> usize {
        self.entry_rsp.load(Ordering::Relaxed)
    }

    /// The GDT and IDT base addresses the CPU loaded (`sgdt`, `sidt`),
    /// recorded when it came up: each CPU has its own GDT, all share the IDT.
    pub fn descriptor_tables(&self) -> (u64, u64) {
        (
            self.gdt_base.load(Ordering::Relaxed),
            self.idt_base.load(Ordering::Relaxed),
        )
    }

    pub(super) fn record_descriptor_tables(&self) {
        use x86_64::instructions::tables::{sgdt, sidt};
        self.gdt_base.store(sgdt().base.as_u64(), Ordering::Relaxed);
        self.idt_base.store(sidt().base.as_u64(), Ordering::Relaxed);
    }
}

// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
static CPUS: [CpuData; MAX_CPUS] = [const { CpuData::new() }; MAX_CPUS];
const _: () = assert!(core::mem::align_of::<CpuData>() >= crate::platform::PREFETCH_PAIR);
static NR_ONLINE: AtomicUsize = AtomicUsize::new(1);

const OFF_THIS: usize = core::mem::offset_of!(CpuData, this);
const OFF_CPU_ID: usize = core::mem::offset_of!(CpuData, cpu_id);
/// Where [`cpu_id`] reads the CPU's number: this offset from the GS base
/// (the platform hands it to `platform::cpu_id`, which reads it inline).
pub const CPU_ID_GS_OFFSET: usize = OFF_CPU_ID;
/// Where the CPU's [`crate::platform::CPU_LINE`]-byte offset into per-CPU
/// arrays is, from the GS base (`platform::cpu_line_offset_fast`).
pub const LINE_OFFSET_GS_OFFSET: usize = core::mem::offset_of!(CpuData, line_offset);
// The platform layer reads the word at the offset it was built with.
const _: () = assert!(LINE_OFFSET_GS_OFFSET == crate::platform::KERNEL_LINE_OFFSET_GS_OFFSET);
/// Where the CPU's preempt count is, from the GS base
/// (`platform::preempt_count_inc_gs`).
pub const PREEMPT_COUNT_GS_OFFSET: usize = core::mem::offset_of!(CpuData, preempt_count);
// The platform layer changes the word at the offset it was built with.
const _: () = assert!(PREEMPT_COUNT_GS_OFFSET == crate::platform::KERNEL_PREEMPT_COUNT_GS_OFFSET);
// Every CPU's line offset indexes arrays of `platform::NR_CPUS` entries.
const _: () = assert!(MAX_CPUS <= crate::platform::NR_CPUS);

/// This CPU's data, through the GS base.
#[inline]
pub fn this_cpu() -> &'static CpuData {
    let p: usize;
    // SAFETY: every CPU points its GS base at its CPUS slot before running
    // Rust code that could call this (init_bsp, ap_entry), and the slot's
    // first word holds the slot's own address.
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[{off}]", out(reg) p, off = const OFF_THIS,
            options(nostack, readonly, preserves_flags));
        &*(p as *const CpuData)
    }
}

/// This CPU's number (0 on the boot CPU), read through the GS base.
#[inline]
pub fn cpu_id() -> usize {
    let id: usize;
    // SAFETY: as in `this_cpu`: the GS base points at this CPU's slot.
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[{off}]", out(reg) id, off = const OFF_CPU_ID,
            options(nostack, readonly, preserves_flags));
    }
    id
}

/// CPUs online (the boot CPU included).
pub fn nr_cpus() -> usize {
    NR_ONLINE.load(Ordering::Acquire)
}

/// CPU `n`'s data, if `n < MAX_CPUS`.
pub fn cpu(n: usize) -> Option<&'static CpuData> {
    CPUS.get(n)
}

fn set_gs_base(c: &'static CpuData) {
    // SAFETY: IA32_GS_BASE only sets where gs: loads go; nothing uses GS
    // for anything else (no user mode, no swapgs).
    unsafe {
        x86_64::registers::model_specific::Msr::new(IA32_GS_BASE).write(c as *const _ as u64)
    };
}

/// Fills every CPU slot's self pointer and number and points the boot
/// CPU's GS base at slot 0: the first thing the kernel does, so that
/// [`cpu_id`] works everywhere after.
pub fn init_bsp() {
    for (n, c) in CPUS.iter().enumerate() {
        c.this.store(c as *const _ as usize, Ordering::Relaxed);
        c.cpu_id.store(n, Ordering::Relaxed);
        c.line_offset
            .store(n * crate::platform::CPU_LINE, Ordering::Relaxed);
    }
    set_gs_base(&CPUS[0]);
    CPUS[0].gs_cpu_id.store(cpu_id(), Ordering::Relaxed);
    CPUS[0].online.store(true, Ordering::Release);
}

/// Called on the LAPIC timer vector: counts this CPU's tick and catches up
/// with TLB flushes; the scheduler's tick follows.
pub fn on_lapic_timer() {
    this_cpu().ticks.fetch_add(1, Ordering::Relaxed);
    tlb_sync_local();
    membarrier_ack_local();
}

/// Sends CPU `cpu` the reschedule IPI (nothing for this CPU, or one that
/// is not online).
pub fn send_reschedule(cpu: usize) {
    if cpu == cpu_id() || !cpu_online(cpu) {
        return;
    }
    apic::send_resched(CPUS[cpu].apic_id());
}

/// The newest [`membarrier_cpu`] request (a generation; CPUs answer by
/// storing the newest they saw in their `mb_ack`).
static MB_REQ: AtomicU64 = AtomicU64::new(0);

/// How long [`membarrier_cpu`] waits for the CPU's answer.
const MEMBARRIER_TIMEOUT_NS: u64 = 1_000_000_000;

/// Answers pending [`membarrier_cpu`] requests on this CPU: a full barrier
/// after reading the newest request, then the answer. Only while the
/// CPU's preempt count is 0: then no task of this CPU is pinned to it (the
/// slab's fast paths pin themselves for the few instructions that use
/// their CPU's sheaves), so the answer comes between two such sections,
/// never inside one, and a section either ended before it (its stores
/// seen by the asker) or starts after it (its loads see the asker's). A
/// pinned CPU answers at its next interrupt with the count at 0: the
/// tick, or the asker's repeated IPI. Called by the reschedule IPI's
/// handler, the ticks, and a CPU that waits for another's answer (so that
/// two CPUs waiting on each other with interrupts masked still get
/// theirs).
#[inline]
pub fn membarrier_ack_local() {
    let c = this_cpu();
    let g = MB_REQ.load(Ordering::SeqCst);
    if c.mb_ack.load(Ordering::Relaxed) < g && c.preempt_count.load(Ordering::Relaxed) == 0 {
        core::sync::atomic::fence(Ordering::SeqCst);
        c.mb_ack.store(g, Ordering::SeqCst);
    }
}

/// Asks CPU `cpu` for a full memory barrier outside any pinned section
/// (Linux's `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` for one CPU,
/// the IPI and the wait of `smp_call_function_single`): when this returns
/// `true`, every section of that CPU with a preempt count above 0 either
/// ended with its stores seen by the caller's loads after the return, or
/// starts with its loads seeing the caller's stores before the call. For
/// this CPU a barrier suffices: a task that runs here is not inside
/// another context's pinned section (an interrupt handler that comes
/// inside one completes before it goes on). A CPU that is not online, or
/// halted for good, runs no framework code and needs none. Otherwise a
/// reschedule IPI (whose handler answers, [`membarrier_ack_local`]),
/// repeated every millisecond, and a wait for the answer, answering this
/// CPU's own requests meanwhile; `false` after a second without one (the
/// CPU spins with interrupts masked, or stays pinned, for that long, e.g.
/// for a lock the caller holds: the caller retries later).
pub fn membarrier_cpu(cpu: usize) -> bool {
    core::sync::atomic::fence(Ordering::SeqCst);
    if cpu == cpu_id() {
        return true;
    }
    let Some(c) = CPUS.get(cpu) else {
        return true;
    };
    if !c.online() || c.dead.load(Ordering::Acquire) {
        return true;
    }
    let g = MB_REQ.fetch_add(1, Ordering::SeqCst) + 1;
    send_reschedule(cpu);
    let t0 = super::timer::now_ns();
    let mut resent = t0;
    while c.mb_ack.load(Ordering::SeqCst) < g {
        membarrier_ack_local();
        if c.dead.load(Ordering::Acquire) {
            return true;
        }
        let now = super::timer::now_ns();
        if now.saturating_sub(t0) > MEMBARRIER_TIMEOUT_NS {
            return false;
        }
        if now.saturating_sub(resent) > 1_000_000 {
            resent = now;
            send_reschedule(cpu);
        }
        core::hint::spin_loop();
    }
    true
}

/// Counts the interrupted task as pinned (`true`: the preempt count one
/// up) or no longer (`false`: one down), around an interrupt handler that
/// came inside a pinned stretch (`platform::in_pinned_section`).
/// Interrupts are masked.
pub fn pin_interrupted(on: bool) {
    let c = this_cpu();
    if on {
        c.preempt_count.fetch_add(1, Ordering::Relaxed);
    } else {
        c.preempt_count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks this CPU as halted for good (a fatal fault): TLB shootdowns stop
/// waiting for it.
pub fn mark_dead() {
    this_cpu().dead.store(true, Ordering::Release);
}

/// The global TLB generation: bumped after every unmap of a kernel page
/// whose virtual address may be mapped again.
static TLB_GEN: AtomicU64 = AtomicU64::new(0);

/// Flushes this CPU's whole TLB, global entries included (kernel pages are
/// mapped global): toggling CR4.PGE does that.
fn flush_tlb_all() {
    use x86_64::registers::control::Cr4;
    const PGE: u64 = 1 << 7;
    let cr4 = Cr4::read_raw();
    if cr4 & PGE != 0 {
        // SAFETY: clearing and restoring PGE only flushes the TLB.
        unsafe {
            Cr4::write_raw(cr4 & !PGE);
            Cr4::write_raw(cr4);
        }
    } else {
        x86_64::instructions::tlb::flush_all();
    }
}

/// Flushes this CPU's TLB if the global generation moved since its last
/// flush. Interrupts masked (tick, IPI).
pub fn tlb_sync_local() {
    let g = TLB_GEN.load(Ordering::Acquire);
    let c = this_cpu();
    if c.tlb_gen.load(Ordering::Relaxed) < g {
        flush_tlb_all();
        c.tlb_gen.store(g, Ordering::Release);
    }
}

/// Records an unmap (after the local `invlpg`): returns the generation
/// every CPU must have flushed before the address may be mapped again.
pub fn tlb_bump() -> u64 {
    TLB_GEN.fetch_add(1, Ordering::AcqRel) + 1
}

/// Whether every running CPU flushed its TLB at generation `generation` or later.
pub fn tlb_all_flushed(generation: u64) -> bool {
    CPUS.iter().all(|c| {
        !c.online()
            || c.dead.load(Ordering::Acquire)
            || c.tlb_gen.load(Ordering::Acquire) >= generation
    })
}

/// Waits (at most a second) until every running CPU flushed its TLB at
/// generation `generation`: flushes here and sends the others a reschedule IPI,
/// whose handler flushes. True when all did.
pub fn tlb_wait(generation: u64) -> bool {
    crate::platform::without_interrupts(tlb_sync_local);
    let t0 = super::timer::now_ns();
    for (n, c) in CPUS.iter().enumerate() {
        if c.online() && c.tlb_gen.load(Ordering::Acquire) < generation {
            send_reschedule(n);
        }
    }
    while !tlb_all_flushed(generation) {
        if super::timer::now_ns() - t0 > 1_000_000_000 {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

// ---------------------------------------------------------------------
// The trampoline. Copied to a page below 1 MiB; a SIPI starts the AP in
// real mode at CS = page >> 4, IP = 0. Everything is addressed relative to
// the page (EBX = its physical address). The BSP fills the data block
// (`TrampolineData`, at kreclaim_tr_data) before each start.
// ---------------------------------------------------------------------
core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .p2align 4
    .global kreclaim_ap_trampoline
kreclaim_ap_trampoline:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x1000, %sp
    xor %ebx, %ebx
    mov %cs, %bx
    shl $4, %ebx
    lgdtl (kreclaim_tr_data - kreclaim_ap_trampoline + 56)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    leal (kreclaim_tr_32 - kreclaim_ap_trampoline)(%ebx), %eax
    pushl $0x08
    pushl %eax
    lretl

    .code32
kreclaim_tr_32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    lea 0x1000(%ebx), %esp
    mov (kreclaim_tr_data - kreclaim_ap_trampoline + 8)(%ebx), %eax
    mov %eax, %cr4
    mov (kreclaim_tr_data - kreclaim_ap_trampoline + 0)(%ebx), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or (kreclaim_tr_data - kreclaim_ap_trampoline + 24)(%ebx), %eax
    wrmsr
    mov (kreclaim_tr_data - kreclaim_ap_trampoline + 16)(%ebx), %eax
    mov %eax, %cr0
    lea (kreclaim_tr_64 - kreclaim_ap_trampoline)(%ebx), %eax
    pushl $0x18
    pushl %eax
    lretl

    .code64
kreclaim_tr_64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov %ebx, %ebx
    mov (kreclaim_tr_data - kreclaim_ap_trampoline + 32)(%rbx), %rsp
    mov (kreclaim_tr_data - kreclaim_ap_trampoline + 40)(%rbx), %rdi
    mov (kreclaim_tr_data - kreclaim_ap_trampoline + 48)(%rbx), %rax
    xor %ebp, %ebp
    call *%rax
1:
    cli
    hlt
    jmp 1b

    .p2align 3
    .global kreclaim_tr_gdt
kreclaim_tr_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00AF9A000000FFFF
    .p2align 3
    .global kreclaim_tr_data
kreclaim_tr_data:
    .skip 64
    .global kreclaim_ap_trampoline_end
kreclaim_ap_trampoline_end:

    .section .text.ap_park, "ax"
    .global kreclaim_ap_park
kreclaim_ap_park:
    movb $1, {parked}(%rip)
2:
    cli
    hlt
    jmp 2b
"#,
    parked = sym PROBE_PARKED,
    options(att_syntax)
);

unsafe extern "C" {
    static kreclaim_ap_trampoline: u8;
    static kreclaim_tr_gdt: u8;
    static kreclaim_tr_data: u8;
    static kreclaim_ap_trampoline_end: u8;
    fn kreclaim_ap_park() -> !;
}

/// Set by a CPU that [`probe_cpu`] woke, from the parking loop.
#[unsafe(no_mangle)]
static PROBE_PARKED: AtomicBool = AtomicBool::new(false);

/// The trampoline's data block, at `kreclaim_tr_data` (offsets used above).
#[repr(C)]
#[derive(Clone, Copy)]
struct TrampolineData {
    cr3: u64,
    cr4: u64,
    cr0: u64,
    /// OR-ed into EFER: LME and NXE as on the BSP.
    efer: u64,
    stack_top: u64,
    cpu: u64,
    entry: u64,
    /// The `lgdt` operand: limit, base low, base high.
    gdtr: [u16; 3],
    pad: u16,
}

const _: () = assert!(core::mem::size_of::<TrampolineData>() == 64);

fn trampoline_offset(sym: *const u8) -> usize {
    sym as usize - (&raw const kreclaim_ap_trampoline) as usize
}

/// What boot found and reserved for the APs.
struct Plan {
    /// APIC ids of the APs to start, CPU 1 onwards.
    apic_ids: [u32; MAX_CPUS],
    aps: usize,
}

static PLAN: spin::Once<Plan> = spin::Once::new();
/// The trampoline page's physical address (0: none reserved).
static TRAMPOLINE: AtomicU64 = AtomicU64::new(0);
/// Serialises AP starts (they share the trampoline's data block).
static START_LOCK: spin::Mutex<()> = spin::Mutex::new(());

fn read_phys(pa: u64, len: usize) -> Option<&'static [u8]> {
    if len == 0 || pa.checked_add(len as u64)? > 1 << 46 {
        return None;
    }
    let p = paging::direct_map_range(pa, len);
    // SAFETY: direct_map_range made every page of the range readable
    // through the direct map; firmware tables are not written after boot.
    Some(unsafe { core::slice::from_raw_parts(p, len) })
}

/// Finds the CPUs (MADT) and maps the boot CPU's LAPIC; returns how many
/// bytes of RAM the APs' stacks will need, for boot's memory check. Runs
/// once, after paging is up and before boot memory is handed out.
pub fn discover() -> u64 {
    apic::map_lapic();
    apic::enable(false);
    let bsp = apic::id();
    CPUS[0].apic_id.store(bsp, Ordering::Relaxed);
    let plan = PLAN.call_once(|| {
        let mut plan = Plan {
            apic_ids: [0; MAX_CPUS],
            aps: 0,
        };
        let madt = match super::acpi::read_madt(read_phys, super::pvh::rsdp_paddr()) {
            Ok(m) => m,
            Err(e) => {
                crate::println!("smp: {e}; running on the boot CPU only");
                return plan;
            }
        };
        let mut left_out = madt.dropped;
        for c in madt.cpus().iter().filter(|c| c.enabled && c.apic_id != bsp) {
            // xAPIC IPIs address 8-bit ids; 0xFF is the broadcast id.
            if c.apic_id >= 0xFF || plan.aps + 1 >= MAX_CPUS {
                left_out += 1;
                continue;
            }
            plan.apic_ids[plan.aps + 1] = c.apic_id;
            plan.aps += 1;
        }
        if left_out > 0 {
            crate::println!(
                "smp: {left_out} CPUs left offline (at most {MAX_CPUS}, APIC ids below 255)"
            );
        }
        plan
    });
    (plan.aps * AP_STACK_BYTES) as u64
}

/// The virtual layout of AP `cpu`'s stacks: (guard page, bottom, top) of
/// the kernel stack, then of the double-fault, NMI and machine-check IST
/// stacks.
fn ap_stack_layout(cpu: usize) -> [(u64, u64, u64); 4] {
    let base = AP_STACKS_VA + cpu as u64 * AP_SLOT;
    let mut out = [(0, 0, 0); 4];
    let mut va = base;
    for (i, bytes) in [
        AP_KERNEL_STACK_BYTES,
        AP_IST_STACK_BYTES,
        AP_IST_STACK_BYTES,
        AP_IST_STACK_BYTES,
    ]
    .into_iter()
    .enumerate()
    {
        out[i] = (va, va + PAGE, va + PAGE + bytes as u64);
        va += PAGE + bytes as u64;
    }
    out
}

/// AP `cpu`'s stacks, each as (guard page, bottom, top): the kernel stack,
/// then the double-fault, NMI and machine-check IST stacks. `None` for the
/// boot CPU (its stacks are static, see [`super::stacks`]) or a CPU that is
/// not online.
pub fn ap_stacks(cpu: usize) -> Option<[(u64, u64, u64); 4]> {
    if cpu == 0 || !cpu_online(cpu) {
        return None;
    }
    Some(ap_stack_layout(cpu))
}

fn cpu_online(cpu: usize) -> bool {
    CPUS.get(cpu).is_some_and(CpuData::online)
}

/// Names the AP stack whose guard page holds `addr` (for fault reports).
pub fn ap_guard_owner(addr: u64) -> Option<&'static str> {
    macro_rules! names {
        ($($n:literal)*) => {
            [$([concat!("CPU ", $n, " kernel"), concat!("CPU ", $n, " IST")]),*]
        };
    }
    const NAMES: [[&str; 2]; MAX_CPUS] = names!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    if !(AP_STACKS_VA..AP_STACKS_VA + MAX_CPUS as u64 * AP_SLOT).contains(&addr) {
        return None;
    }
    let cpu = ((addr - AP_STACKS_VA) / AP_SLOT) as usize;
    if cpu == 0 {
        return None;
    }
    ap_stack_layout(cpu)
        .iter()
        .position(|&(guard, _, _)| (guard..guard + PAGE).contains(&addr))
        .map(|i| NAMES[cpu][(i > 0) as usize])
}

/// Why a CPU did not come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApStartError {
    /// No CPU with this APIC id answered the start-up IPIs in time.
    NotResponding {
        /// The local APIC id that was sent INIT-SIPI-SIPI.
        apic_id: u32,
        /// How long the boot CPU waited, in milliseconds.
        waited_ms: u64,
    },
    /// No trampoline page below 1 MiB was reserved at boot.
    NoTrampoline,
    /// Another CPU start is in progress.
    Busy,
    /// The CPU with this APIC id is online: INIT would reset it.
    Online {
        /// Its local APIC id.
        apic_id: u32,
    },
}

impl core::fmt::Display for ApStartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotResponding { apic_id, waited_ms } => write!(
                f,
                "the CPU with APIC id {apic_id} did not come up within {waited_ms} ms of INIT-SIPI-SIPI; going on without it"
            ),
            Self::NoTrampoline => f.write_str("no trampoline page below 1 MiB"),
            Self::Busy => f.write_str("another CPU start is in progress"),
            Self::Online { apic_id } => write!(
                f,
                "the CPU with APIC id {apic_id} is online: INIT-SIPI-SIPI would reset it"
            ),
        }
    }
}

fn udelay(us: u64) {
    let end = super::timer::now_ns() + us * 1000;
    while super::timer::now_ns() < end {
        core::hint::spin_loop();
    }
}

/// Writes the trampoline's data block (through the direct map).
fn write_data(page: u64, data: TrampolineData) {
    let off = trampoline_offset(&raw const kreclaim_tr_data);
    // SAFETY: the trampoline page is reserved for this at boot (outside
    // the page allocator), direct mapped; `off + 64` lies inside the copy.
    unsafe {
        core::ptr::write_volatile(
            paging::phys_to_virt(page + off as u64) as *mut TrampolineData,
            data,
        )
    };
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// INIT-SIPI-SIPI to `apic_id` with the trampoline's data block set to
/// `data`, then waits until `arrived()` or `timeout_ns` pass; on timeout
/// sends INIT again so the CPU cannot start late. The caller holds
/// START_LOCK and has identity mapped the trampoline page.
fn kick(
    page: u64,
    apic_id: u32,
    data: TrampolineData,
    timeout_ns: u64,
    arrived: impl Fn() -> bool,
) -> Result<(), ApStartError> {
    write_data(page, data);
    let t0 = super::timer::now_ns();
    apic::send_init(apic_id);
    udelay(10_000);
    apic::send_sipi(apic_id, (page >> 12) as u8);
    udelay(200);
    if !arrived() {
        apic::send_sipi(apic_id, (page >> 12) as u8);
    }
    while !arrived() {
        let waited = super::timer::now_ns() - t0;
        if waited > timeout_ns {
            apic::send_init(apic_id);
            return Err(ApStartError::NotResponding {
                apic_id,
                waited_ms: waited / 1_000_000,
            });
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// The data block fields every start shares: the BSP's control registers
/// and the trampoline GDT's address.
fn base_data(page: u64) -> TrampolineData {
    use x86_64::registers::control::{Cr0, Cr4};
    // SAFETY: reading EFER has no side effects.
    let efer = unsafe { x86_64::registers::model_specific::Msr::new(0xC000_0080).read() };
    let gdt = page + trampoline_offset(&raw const kreclaim_tr_gdt) as u64;
    TrampolineData {
        cr3: paging::root(),
        cr4: Cr4::read_raw(),
        cr0: Cr0::read_raw(),
        efer: efer & 0x900, // LME | NXE
        stack_top: 0,
        cpu: 0,
        entry: 0,
        gdtr: [31, gdt as u16, (gdt >> 16) as u16],
        pad: 0,
    }
}

/// Reserves the trampoline page and the APs' stacks from `info.usable`,
/// maps the stacks, and starts every AP [`discover`] found, one at a time.
/// Needs the timer running (delays, LAPIC calibration) and interrupts on.
pub fn boot_aps(info: &mut BootInfo) {
    let Some(plan) = PLAN.get() else { return };
    if plan.aps == 0 {
        return;
    }
    let Some(page) = info
        .usable
        .regions()
        .iter()
        .find(|r| r.start >= PAGE && r.start + PAGE <= 0x10_0000 && r.len() >= PAGE)
        .map(|r| r.start)
    else {
        crate::println!(
            "smp: no usable page below 1 MiB for the AP trampoline; running on the boot CPU only"
        );
        return;
    };
    let bytes = (plan.aps * AP_STACK_BYTES) as u64;
    let Some(stacks) = info
        .usable
        .regions()
        .iter()
        .find(|r| r.start >= 0x10_0000 && r.len() >= bytes)
        .map(|r| r.start)
    else {
        crate::println!(
            "smp: no {bytes} bytes of RAM for the AP stacks; running on the boot CPU only"
        );
        return;
    };
    info.usable.carve(page, page + PAGE);
    info.usable.carve(stacks, stacks + bytes);
    TRAMPOLINE.store(page, Ordering::Relaxed);

    // Map each AP's four stacks below their guard pages.
    let mut pa = stacks;
    for cpu in 1..=plan.aps {
        for (_, bottom, top) in ap_stack_layout(cpu) {
            let mut va = bottom;
            while va < top {
                paging::map_page(va, pa);
                va += PAGE;
                pa += PAGE;
            }
        }
    }

    // Copy the trampoline code.
    let (start, end) = (
        &raw const kreclaim_ap_trampoline,
        &raw const kreclaim_ap_trampoline_end,
    );
    let len = end as usize - start as usize;
    // SAFETY: the trampoline's bytes lie in the kernel's rodata; the page
    // was just taken from usable RAM and is direct mapped; `len` < 4 KiB
    // less the stack the trampoline keeps at the top of its page.
    unsafe { core::ptr::copy_nonoverlapping(start, paging::phys_to_virt(page), len) };

    apic::calibrate_timer();
    let _guard = START_LOCK.lock();
    paging::map_identity_exec(page);
    let base = base_data(page);
    for (cpu, c) in CPUS.iter().enumerate().take(plan.aps + 1).skip(1) {
        let apic_id = plan.apic_ids[cpu];
        c.apic_id.store(apic_id, Ordering::Relaxed);
        let data = TrampolineData {
            stack_top: ap_stack_layout(cpu)[0].2,
            cpu: cpu as u64,
            entry: ap_entry as *const () as u64,
            ..base
        };
        match kick(page, apic_id, data, AP_START_TIMEOUT_NS, || c.online()) {
            Ok(()) => {
                NR_ONLINE.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => crate::println!("smp: CPU {cpu}: {e}"),
        }
    }
    paging::unmap_page(page);
    log::info!(
        "smp: {} of {} CPUs online (AP tick {} Hz); they run tasks once the scheduler starts",
        nr_cpus(),
        plan.aps + 1,
        apic::AP_TICK_HZ
    );
}

/// Sends INIT-SIPI-SIPI to `apic_id` with the trampoline aimed at a
/// parking loop (no stack, interrupts off) and waits up to `timeout_ns`
/// for the CPU to get there. `Err(NotResponding)` names a CPU that never
/// answered, which is what boot reports for an AP that does not come up;
/// tests use it with an APIC id no CPU has. An online CPU's id is refused
/// (`Err(Online)`): INIT would reset it.
pub fn probe_cpu(apic_id: u32, timeout_ns: u64) -> Result<(), ApStartError> {
    if CPUS.iter().any(|c| c.online() && c.apic_id() == apic_id) {
        return Err(ApStartError::Online { apic_id });
    }
    let page = TRAMPOLINE.load(Ordering::Relaxed);
    if page == 0 {
        return Err(ApStartError::NoTrampoline);
    }
    let Some(_guard) = START_LOCK.try_lock() else {
        return Err(ApStartError::Busy);
    };
    PROBE_PARKED.store(false, Ordering::SeqCst);
    let data = TrampolineData {
        entry: kreclaim_ap_park as *const () as u64,
        ..base_data(page)
    };
    crate::platform::without_interrupts(|| paging::map_identity_exec(page));
    let r = kick(page, apic_id, data, timeout_ns, || {
        PROBE_PARKED.load(Ordering::SeqCst)
    });
    crate::platform::without_interrupts(|| paging::unmap_page(page));
    r
}

/// First Rust code on an AP, called by the trampoline on the AP's kernel
/// stack with the kernel's page tables and the trampoline's GDT.
extern "C" fn ap_entry(cpu: usize) -> ! {
    let c = &CPUS[cpu];
    set_gs_base(c);
    c.gs_cpu_id.store(cpu_id(), Ordering::Relaxed);
    let [_, df, nmi, mce] = ap_stack_layout(cpu);
    gdt::init_ap(cpu, [df.2, nmi.2, mce.2]);
    super::interrupts::init();
    c.record_descriptor_tables();
    let rsp: usize;
    // SAFETY: reads the stack pointer.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    c.entry_rsp.store(rsp, Ordering::Relaxed);
    apic::enable(true);
    c.apic_id.store(apic::id(), Ordering::Relaxed);
    apic::start_periodic_timer();
    c.online.store(true, Ordering::Release);
    // Until the scheduler runs: the tick count and call_on_ap functions.
    loop {
        if crate::task::ap_ready() {
            crate::task::run_idle();
        }
        run_pending_call();
        // Interrupts go on with the `hlt` (no wake-up is lost in between); a
        // call stored meanwhile runs after the next tick at the latest.
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Runs the function [`call_on_ap`] handed to this CPU, if any (the AP's
/// idle loop calls it).
pub fn run_pending_call() {
    let f = this_cpu().call.swap(0, Ordering::AcqRel);
    if f != 0 {
        // SAFETY: `call` only ever holds 0 or a `fn()` stored by call_on_ap.
        let f = unsafe { core::mem::transmute::<usize, fn()>(f) };
        f();
    }
}

/// Hands `f` to AP `cpu`'s idle loop, which runs it once on that AP, in
/// its idle task (woken by a reschedule IPI; within a tick at the latest).
/// `false` if `cpu` is the boot CPU, not online, or has a call pending.
/// `f` runs in the idle task, which must never block: it may take
/// spinlocks and allocate without sleeping, but not wait (mutexes, wait
/// queues); code that waits runs in a task (`task::spawn_on`).
pub fn call_on_ap(cpu: usize, f: fn()) -> bool {
    let ok = match CPUS.get(cpu) {
        Some(c) if cpu != 0 && c.online() => c
            .call
            .compare_exchange(0, f as usize, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok(),
        _ => false,
    };
    if ok {
        send_reschedule(cpu);
    }
    ok
}
