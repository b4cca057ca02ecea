//! What the framework needs from the kernel it runs in.
//!
//! A hobby OS that embeds kreclaim implements [`Platform`] and installs it
//! with [`set`]; the QEMU kernel in `arch::x86_64` is one such platform.
//! Until one is installed, interrupts are treated as always masked and time
//! stands still, which is right for single-threaded host use.

#![deny(missing_docs)]

use crate::bootinfo::MemoryMap;

/// Interrupt masking, time, console, the page-frame source and kernel
/// threads for the framework.
pub trait Platform: Sync {
    /// Masks interrupts; returns whether they were enabled.
    fn irq_save(&self) -> bool;
    /// Undoes [`Platform::irq_save`].
    fn irq_restore(&self, was_enabled: bool);
    /// Whether [`Platform::irq_save`] / [`Platform::irq_restore`] are exactly
    /// the CPU's own interrupt flag (x86_64: `pushf; cli` and `sti`) and do
    /// nothing else. Then [`IrqGuard`] masks interrupts inline, without a
    /// call through the platform: the allocator's per-CPU fast paths pay for
    /// every instruction. Honoured on bare-metal x86_64 and in hosted
    /// builds, where the "CPU's own flag" is the calling thread's: the
    /// framework keeps it in a thread-local of its own
    /// (`thread_irq_save`, hosted builds only), as the host platform wants.
    fn irq_flag_is_native(&self) -> bool {
        false
    }
    /// Whether [`Platform::cpu_id`] stays the same for the calling thread
    /// until the thread calls `platform::forget_thread_cpu` (a hosted
    /// platform that runs each thread as a CPU of its own). The framework
    /// then keeps the number in a thread-local and asks the platform once
    /// per thread. Only honoured in hosted builds.
    fn cpu_id_is_per_thread(&self) -> bool {
        false
    }
    /// Makes every other running thread of the process execute a full
    /// memory barrier before this returns (Linux's `membarrier(2)`,
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`), so that a rare caller can pair
    /// with plain loads and stores on a hot path (an asymmetric fence).
    /// `false` if the platform cannot. Only asked in hosted builds whose
    /// CPUs are threads ([`Platform::cpu_id_is_per_thread`]): the slab's
    /// per-CPU sheaf flag is a plain store there only when this works (see
    /// `cpus_are_threads`); it is first called once from [`set`] to
    /// register.
    fn membarrier(&self) -> bool {
        false
    }
    /// The number of the CPU running the caller, below [`NR_CPUS`]: the
    /// index of per-CPU data. Only meaningful with interrupts (or
    /// preemption) masked, since the caller may move to another CPU
    /// otherwise. The default is 0, for platforms with one CPU.
    fn cpu_id(&self) -> usize {
        0
    }
    /// Where [`Platform::cpu_id`] can be read inline: the offset of a word
    /// holding the CPU's number from the GS base (x86_64: each CPU's GS base
    /// points at its own data). Then [`cpu_id`] is one `gs:` load instead of
    /// a call through the platform: the allocator's per-CPU fast paths read
    /// it on every call. Only honoured on bare-metal x86_64.
    fn cpu_id_gs_offset(&self) -> Option<usize> {
        None
    }
    /// Where a word holding the CPU's number times `platform::CPU_LINE`
    /// can be read inline: its offset from the GS base. The slab's fast
    /// paths index their per-CPU sheaves by it with one `gs:` load, when
    /// the offset is the one the framework was built for (the kernel's own
    /// x86_64 platform; see `platform::cpu_line_offset_ready`). The word
    /// must be below `NR_CPUS * CPU_LINE`. Only honoured on bare-metal
    /// x86_64 with the `qemu` feature.
    fn cpu_line_offset_gs_offset(&self) -> Option<usize> {
        None
    }
    /// Where the scheduler's preempt count of the CPU can be changed
    /// inline: the offset from the GS base of a word the framework owns
    /// (the platform only reserves it, zeroed). When it and
    /// [`Platform::cpu_line_offset_gs_offset`] are the offsets the framework
    /// was built for (the kernel's own x86_64 platform; see
    /// `platform::kernel_gs_layout`), `preempt_disable` is one `inc` of that
    /// word and the slab's fast paths pin the task to its CPU with it. Only
    /// honoured on bare-metal x86_64 with the `qemu` feature.
    fn preempt_count_gs_offset(&self) -> Option<usize> {
        None
    }
    /// Makes CPU `cpu` execute a full memory barrier before this returns
    /// (or shows that it cannot be running framework code: not online,
    /// halted for good), as [`Platform::membarrier`] does for every thread:
    /// the rare side of an asymmetric fence with that CPU's plain loads and
    /// stores (the slab's per-CPU sheaf flag). `false` if the platform
    /// cannot, or the CPU did not answer in time. The default asks
    /// [`Platform::membarrier`]. The kernel's own platform sends the CPU an
    /// IPI and waits for its answer.
    fn membarrier_cpu(&self, cpu: usize) -> bool {
        let _ = cpu;
        self.membarrier()
    }
    /// Monotonic nanoseconds since boot.
    fn now_ns(&self) -> u64;
    /// A cheap, monotonic cycle counter for benchmarks (TSC on x86_64).
    fn cycles(&self) -> u64;
    /// Writes console text.
    fn console_write(&self, s: &str);
    /// Writes machine-readable output (`format=json` lines, `\n` line
    /// ends) to a stream of its own when the platform has one (QEMU: COM1,
    /// the console then being on COM2); by default to the console.
    fn data_write(&self, s: &str) {
        self.console_write(s)
    }
    /// The kernel virtual address through which physical address `pa` is
    /// reached (a direct map). The default is the identity, for platforms
    /// that run with physical addressing.
    fn phys_to_virt(&self, pa: u64) -> *mut u8 {
        pa as *mut u8
    }
    /// The physical address behind a pointer from [`Platform::phys_to_virt`]
    /// (or into the kernel image).
    fn virt_to_phys(&self, va: *const u8) -> u64 {
        va as u64
    }
    /// The page-frame source: the physical RAM the page allocator may
    /// manage, as [`RegionKind::Ram`](crate::bootinfo::RegionKind::Ram)
    /// regions, with whatever the platform keeps for itself (kernel image,
    /// boot data, early heap, a RAM disk) already left out. Addresses are
    /// physical and reached through [`Platform::phys_to_virt`].
    /// [`init_from_platform`](crate::mm::page_alloc::init_from_platform)
    /// reads it once at bring-up (the page allocator carves its `mem_map`
    /// out of it). The default, no memory, suits a platform that calls
    /// `page_alloc::init` with a map of its own.
    fn usable_memory(&self) -> MemoryMap {
        MemoryMap::new()
    }
    /// Whether the running context may sleep (GFP_KERNEL rather than
    /// GFP_ATOMIC for Rust's global allocator, i.e. `Box`, `Vec`, `Arc`).
    /// Asked only while the framework's own scheduler is not running: a
    /// kernel with a scheduler of its own answers for its contexts (false
    /// with interrupts masked, in an interrupt handler or under a spinlock).
    /// The default, false, is always safe.
    fn may_sleep(&self) -> bool {
        false
    }
    /// Called now and then by a CPU spinning for a lock (Linux's
    /// `cpu_relax`, seldom). The default is the CPU's pause hint; a platform
    /// whose "CPUs" are threads that the host may preempt (the host build)
    /// yields, so that a descheduled lock holder gets to run.
    fn cpu_relax(&self) {
        core::hint::spin_loop();
    }
    /// Waits for the next interrupt (idle). May return spuriously.
    fn wait_for_interrupt(&self) {}
    /// Asks CPU `cpu` to look at its run queue soon (a reschedule IPI): a
    /// task was queued there from another CPU. An idle CPU must leave
    /// [`Platform::wait_for_interrupt`]. The default does nothing, for
    /// platforms with one CPU.
    fn send_reschedule(&self, cpu: usize) {
        let _ = cpu;
    }
    /// Work the platform does in each round of a CPU's idle loop, with
    /// interrupts enabled (x86_64: a function handed to an AP with
    /// `call_on_ap`). The default does nothing.
    fn idle_poll(&self) {}
    /// Allocates a kernel stack of at least `bytes` with an unmapped guard
    /// page below it. `None` when the platform cannot run kernel threads or
    /// is out of memory.
    fn alloc_kernel_stack(&self, bytes: usize) -> Option<KernelStack> {
        let _ = bytes;
        None
    }
    /// Returns a stack from [`Platform::alloc_kernel_stack`].
    fn free_kernel_stack(&self, stack: KernelStack) {
        let _ = stack;
    }
    /// Prepares a fresh stack so that the first [`Platform::switch_context`]
    /// to it calls `entry` with interrupts masked; returns the saved context.
    ///
    /// # Safety
    /// `stack_top` must be the top of a stack from
    /// [`Platform::alloc_kernel_stack`] that nothing runs on or refers to:
    /// the words just below it are overwritten.
    unsafe fn init_context(&self, stack_top: usize, entry: extern "C" fn() -> !) -> usize {
        let _ = (stack_top, entry);
        unimplemented!("this platform has no kernel threads")
    }
    /// Saves the running context into `*prev` and resumes `next`.
    ///
    /// # Safety
    /// `next` must come from `init_context` or an earlier save, interrupts masked.
    unsafe fn switch_context(&self, prev: *mut usize, next: usize) {
        let _ = (prev, next);
        unimplemented!("this platform has no kernel threads")
    }
    /// How many CPUs are online. The default suits a uniprocessor platform.
    fn nr_cpus(&self) -> usize {
        1
    }
    /// Stops the machine, reporting success or failure to whoever started
    /// it (QEMU's exit status on our platform).
    fn exit(&self, success: bool) -> ! {
        let _ = success;
        loop {
            core::hint::spin_loop();
        }
    }
}

/// The most CPUs the framework's per-CPU data has room for:
/// [`Platform::cpu_id`] is always below it.
pub const NR_CPUS: usize = 16;

/// The number of the CPU running the caller ([`Platform::cpu_id`]; 0 with
/// no platform installed).
#[inline]
pub fn cpu_id() -> usize {
    // Hosted builds keep a per-thread answer in a thread-local (see
    // `Platform::cpu_id_is_per_thread`).
    #[cfg(not(target_os = "none"))]
    {
        let id = hosted::CPU.with(core::cell::Cell::get);
        if id != hosted::NO_CPU {
            return id;
        }
        if let Some(p) = get() {
            return hosted::cpu_id_slow(p);
        }
    }
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    {
        let off = GS_CPU_ID.load(core::sync::atomic::Ordering::Relaxed);
        if off != usize::MAX {
            let id: usize;
            // SAFETY: the platform declared that gs:[off] holds the running
            // CPU's number (its GS base is set before any framework code runs).
            unsafe {
                core::arch::asm!("mov {}, qword ptr gs:[{}]", out(reg) id, in(reg) off,
                    options(nostack, readonly, preserves_flags))
            };
            return id;
        }
    }
    cpu_id_from_platform()
}

/// [`cpu_id`] when it can be read inline (the kernel's `gs:` load, a hosted
/// thread's cached number), `None` otherwise. For fast paths that have a
/// slow path to fall back to: with no call in them, they need no registers
/// saved (the allocator's fast paths take their slow path on `None`, which
/// asks [`cpu_id`]). In hosted builds a number is cached for a thread only
/// when the platform runs every thread as a CPU of its own, so `Some` there
/// implies [`cpus_are_threads`] (the slab's fast paths rely on it).
#[inline(always)]
pub fn cpu_id_inline() -> Option<usize> {
    #[cfg(not(target_os = "none"))]
    {
        let id = hosted::CPU.with(core::cell::Cell::get);
        (id != hosted::NO_CPU).then_some(id)
    }
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    {
        let off = GS_CPU_ID.load(core::sync::atomic::Ordering::Relaxed);
        if off == usize::MAX {
            return None;
        }
        let id: usize;
        // SAFETY: the platform declared that gs:[off] holds the running
        // CPU's number (its GS base is set before any framework code runs).
        unsafe {
            core::arch::asm!("mov {}, qword ptr gs:[{}]", out(reg) id, in(reg) off,
                options(nostack, readonly, preserves_flags))
        };
        Some(id)
    }
    #[cfg(all(not(target_arch = "x86_64"), target_os = "none"))]
    {
        Some(cpu_id())
    }
}

/// Where the kernel's own x86_64 platform keeps each CPU's
/// [`cpu_line_offset_fast`] word: this offset from the GS base
/// (`arch::x86_64::smp`). Known when the framework is built, so that the
/// fast paths read the word with one `gs:` load of a constant address once
/// they know that platform is installed.
///
/// The value is fixed here, not read from `arch`, so that the platform
/// layer does not depend on the architecture code that implements it;
/// `arch::x86_64::smp` asserts at build time that its `CpuData` keeps the
/// word at this offset.
#[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
pub const KERNEL_LINE_OFFSET_GS_OFFSET: usize = 88;

/// Where the kernel's own x86_64 platform keeps each CPU's preempt count
/// ([`Platform::preempt_count_gs_offset`]): this offset from the GS base,
/// fixed here for the same reason as [`KERNEL_LINE_OFFSET_GS_OFFSET`] and
/// asserted the same way by `arch::x86_64::smp`.
#[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
pub const KERNEL_PREEMPT_COUNT_GS_OFFSET: usize = 96;

/// Whether the installed platform keeps the line offset and the preempt
/// count where this build expects them ([`kernel_gs_layout`]).
#[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
static KERNEL_GS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the installed platform is laid out as the kernel's own x86_64
/// platform: its per-CPU line offset at [`KERNEL_LINE_OFFSET_GS_OFFSET`]
/// and its preempt count at [`KERNEL_PREEMPT_COUNT_GS_OFFSET`] from the GS
/// base. Then the scheduler's preempt count is that word
/// ([`preempt_count_inc_gs`] and friends) and the slab's per-CPU sheaf
/// lock is a plain flag under it. Always `false` outside the kernel build
/// (feature `qemu`), and for any other platform in it. Once true it stays
/// true (a platform is installed once, before the scheduler runs).
#[inline(always)]
pub fn kernel_gs_layout() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    {
        KERNEL_GS.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    {
        false
    }
}

/// Whether `rip` lies in one of the slab fast path's pinned stretches: the
/// few instructions from reading the CPU's line offset to taking that CPU's
/// sheaf flag, each recorded by its asm as a pair of 32-bit offsets
/// (start, end) relative to the pair's own words in the section
/// `kreclaim_pinned`. The kernel's interrupt entry asks it for the
/// interrupted address and, inside one, counts the task as pinned while
/// the handler runs (Linux's restartable sequences mark code ranges the
/// same way). A linear scan: one entry per inlined copy of the stretch, a
/// few dozen, asked once per interrupt. Always `false` outside the kernel
/// build.
pub fn in_pinned_section(rip: usize) -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    {
        unsafe extern "C" {
            static __start_kreclaim_pinned: [i32; 0];
            static __stop_kreclaim_pinned: [i32; 0];
        }
        let mut p = (&raw const __start_kreclaim_pinned) as *const i32;
        let end = (&raw const __stop_kreclaim_pinned) as *const i32;
        while (p as usize) + 8 <= end as usize {
            // SAFETY: two words of the section, written by the asm of the
            // slab's fast paths, within the linker's bounds of it.
            let (s, e) = unsafe { (p.read(), p.add(1).read()) };
            let start = (p as usize).wrapping_add_signed(s as isize);
            let stop = (p as usize + 4).wrapping_add_signed(e as isize);
            if rip >= start && rip < stop {
                return true;
            }
            p = p.wrapping_add(2);
        }
        false
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    {
        let _ = rip;
        false
    }
}

/// How many pinned stretches [`in_pinned_section`] knows (the slab fast
/// path's inlined copies); 0 outside the kernel build.
pub fn pinned_sections() -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    {
        unsafe extern "C" {
            static __start_kreclaim_pinned: [i32; 0];
            static __stop_kreclaim_pinned: [i32; 0];
        }
        let start = (&raw const __start_kreclaim_pinned) as usize;
        let end = (&raw const __stop_kreclaim_pinned) as usize;
        (end - start) / 8
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    {
        0
    }
}

/// Adds one to this CPU's preempt count: one `inc qword ptr gs:[off]`, a
/// single instruction, so it needs no interrupt mask (an interrupt comes
/// before or after it, on this CPU). Nothing elsewhere (see the safety
/// contract, which cannot hold there).
///
/// # Safety
/// [`kernel_gs_layout`] returned `true` before (in this boot).
#[inline(always)]
pub unsafe fn preempt_count_inc_gs() {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    // SAFETY: the caller saw `kernel_gs_layout`: gs:[off] is this CPU's
    // preempt count. Not `nomem`: a compiler barrier, so no access of the
    // pinned section moves before it.
    unsafe {
        core::arch::asm!("inc qword ptr gs:[{off}]",
            off = const KERNEL_PREEMPT_COUNT_GS_OFFSET, options(nostack))
    };
}

/// Takes one from this CPU's preempt count (`dec qword ptr gs:[off]`); see
/// [`preempt_count_inc_gs`].
///
/// # Safety
/// [`kernel_gs_layout`] returned `true` before (in this boot).
#[inline(always)]
pub unsafe fn preempt_count_dec_gs() {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    // SAFETY: as in `preempt_count_inc_gs`; a compiler barrier, so no
    // access of the pinned section moves after it.
    unsafe {
        core::arch::asm!("dec qword ptr gs:[{off}]",
            off = const KERNEL_PREEMPT_COUNT_GS_OFFSET, options(nostack))
    };
}

/// This CPU's preempt count (one `gs:` load); 0 elsewhere.
///
/// # Safety
/// [`kernel_gs_layout`] returned `true` before (in this boot).
#[inline(always)]
pub unsafe fn preempt_count_gs() -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    {
        let v: usize;
        // SAFETY: as in `preempt_count_inc_gs`.
        unsafe {
            core::arch::asm!("mov {}, qword ptr gs:[{off}]", out(reg) v,
                off = const KERNEL_PREEMPT_COUNT_GS_OFFSET,
                options(nostack, readonly, preserves_flags))
        };
        v
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    {
        0
    }
}

/// Sets this CPU's preempt count (the scheduler, when a task resumes with
/// its own count).
///
/// # Safety
/// [`kernel_gs_layout`] returned `true` before (in this boot).
#[inline(always)]
pub unsafe fn set_preempt_count_gs(v: usize) {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    // SAFETY: as in `preempt_count_inc_gs`.
    unsafe {
        core::arch::asm!("mov qword ptr gs:[{off}], {}", in(reg) v,
            off = const KERNEL_PREEMPT_COUNT_GS_OFFSET,
            options(nostack, preserves_flags))
    };
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    let _ = v;
}

/// Whether [`cpu_line_offset_fast`] may be called. The kernel build
/// (feature `qemu`) needs the installed platform to keep the word where
/// the kernel's own platform does ([`Platform::cpu_line_offset_gs_offset`]
/// equal to the build's constant); any other platform, e.g. a hobby OS
/// whose build unified the feature, gets `false`, and the callers' general
/// paths. Elsewhere always `true` ([`cpu_line_offset_fast`] checks for
/// itself). Once true it stays true (a platform is installed once). The
/// slab's fast paths sit behind flags that are only set when this holds
/// (`SLAB_ALLOC_FAST` for the allocation, the fast mem_map copy for the
/// frees).
#[inline]
pub fn cpu_line_offset_ready() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    {
        KERNEL_GS.load(core::sync::atomic::Ordering::Acquire)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    {
        true
    }
}

/// Bytes of one entry of a per-CPU array whose entries are a cache line
/// each (e.g. the slab's per-CPU sheaves): [`cpu_line_offset_fast`] is the
/// CPU number times this. Two 64-byte lines, not one: x86's adjacent-line
/// (spatial) prefetcher fetches lines in aligned 128-byte pairs, so two
/// CPUs writing neighbouring 64-byte entries still pull the pair from each
/// other. With 64-byte entries `bench=smp`'s 2-CPU throughput was 1.57-1.60x
/// the 1-CPU figure; with 128, 2.10-2.14x. (Linux gives each CPU its own
/// per-CPU chunk, so its per-CPU data never sits in such a pair.)
pub const CPU_LINE: usize = 128;

/// The span of memory that one CPU's writes take from the others on x86
/// (a 128-byte pair of cache lines, see [`CPU_LINE`]): per-CPU entries
/// kept in arrays are aligned to it.
pub const PREFETCH_PAIR: usize = 128;
const _: () = assert!(CPU_LINE >= PREFETCH_PAIR && CPU_LINE.is_multiple_of(PREFETCH_PAIR));

/// This CPU's byte offset into a per-CPU array of [`CPU_LINE`]-byte
/// entries indexed by CPU number, below `NR_CPUS * CPU_LINE`, for fast
/// paths that have seen [`cpu_line_offset_ready`]: in the kernel build one
/// `gs:` load of a word the kernel's own platform keeps precomputed
/// (Linux's `this_cpu_ptr` adds a per-CPU offset the same way), else
/// [`cpu_id_inline`] scaled (the number masked below `NR_CPUS`).
///
/// # Safety
/// [`cpu_line_offset_ready`] returned `true` before (in this boot):
/// otherwise the kernel build may read a word that is not there, or
/// through a GS base that is not set up.
#[inline(always)]
pub unsafe fn cpu_line_offset_fast() -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    {
        let off: usize;
        // SAFETY: the caller saw `cpu_line_offset_ready`: the installed
        // platform keeps `cpu_id * CPU_LINE` (`cpu_id` below `NR_CPUS`) at
        // gs:[this offset], and every CPU's GS base is set before
        // framework code runs on it.
        unsafe {
            core::arch::asm!("mov {}, qword ptr gs:[{off}]", out(reg) off,
                off = const KERNEL_LINE_OFFSET_GS_OFFSET,
                options(nostack, readonly, preserves_flags))
        };
        Some(off)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    {
        cpu_id_inline().map(|c| (c & (NR_CPUS - 1)) * CPU_LINE)
    }
}

/// [`cpu_id`] through the platform's trait object; out of line, so that the
/// inline fast path falls straight through to its `gs:` load.
#[cold]
#[inline(never)]
fn cpu_id_from_platform() -> usize {
    get().map_or(0, |p| p.cpu_id())
}

/// Whether interrupts are masked on this CPU (Linux's `irqs_disabled`):
/// one `pushf` when the platform's flag is the CPU's own (hosted: the
/// thread's flag, read from its thread-local), else a save and
/// restore through the platform (true with no platform, as
/// [`IrqGuard`] treats it).
#[inline]
pub fn irqs_disabled() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    if NATIVE_IRQ.load(core::sync::atomic::Ordering::Relaxed) {
        let flags: u64;
        // SAFETY: reads RFLAGS through the stack; changes nothing.
        unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
        return flags & (1 << 9) == 0;
    }
    // Hosted builds whose platform keeps the flag per thread: read it.
    #[cfg(not(target_os = "none"))]
    if NATIVE_IRQ.load(core::sync::atomic::Ordering::Relaxed) {
        return !hosted::IRQS_ENABLED.with(core::cell::Cell::get);
    }
    irqs_disabled_from_platform()
}

/// [`irqs_disabled`] through the platform's trait object (out of line, as
/// [`cpu_id_from_platform`]).
#[cold]
#[inline(never)]
fn irqs_disabled_from_platform() -> bool {
    match get() {
        Some(p) => {
            let was = p.irq_save();
            p.irq_restore(was);
            !was
        }
        None => true,
    }
}

/// Whether the slab allocation fast path may run (Linux would use static
/// keys): the interrupt flag is native (see [`irqs_disabled_native`]),
/// lockdep is off and `failslab` is not armed, all in one load. Cleared at
/// once by whatever turns lockdep on or arms `failslab`; set again lazily by
/// the slab's allocation slow path when all three hold (the slab reads it;
/// it lives here, below both lockdep and mm, so that both may clear it).
// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
pub(crate) static SLAB_ALLOC_FAST: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// The page allocator's [`SLAB_ALLOC_FAST`]: the interrupt flag is native,
/// lockdep is off and `fail_page_alloc` is not armed, in one load. Cleared
/// by whatever turns lockdep on or arms `fail_page_alloc`; set again by the
/// page allocator's general path when all three hold.
// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
pub(crate) static PAGE_ALLOC_FAST: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Whether interrupts are masked on this CPU, for callers that know the
/// platform's flag is native ([`Platform::irq_flag_is_native`], as
/// `SLAB_ALLOC_FAST` implies): the flag read inline, nothing else.
#[inline(always)]
pub fn irqs_disabled_native() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    {
        let flags: u64;
        // SAFETY: reads RFLAGS through the stack; changes nothing.
        unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
        flags & (1 << 9) == 0
    }
    #[cfg(not(target_os = "none"))]
    {
        !hosted::IRQS_ENABLED.with(core::cell::Cell::get)
    }
    #[cfg(all(not(target_arch = "x86_64"), target_os = "none"))]
    {
        irqs_disabled()
    }
}

/// Hosted builds whose platform runs each thread as a CPU of its own for
/// good ([`Platform::cpu_id_is_per_thread`]).
#[cfg(not(target_os = "none"))]
static THREAD_CPUS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether every CPU is a thread that never runs as another CPU and is never
/// interrupted (hosted builds whose platform says
/// [`Platform::cpu_id_is_per_thread`]) and the platform has an asymmetric
/// fence ([`Platform::membarrier`]): then a CPU's own thread may take its
/// per-CPU flag with a plain store, and the rare other thread that needs it
/// (a drain) announces itself and calls [`membarrier`] before it looks (the
/// slab's sheaf lock uses this).
#[inline(always)]
pub fn cpus_are_threads() -> bool {
    #[cfg(not(target_os = "none"))]
    {
        THREAD_CPUS.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(target_os = "none")]
    {
        false
    }
}

/// Whether the installed platform's interrupt flag is native (read inline).
pub fn irq_flag_native() -> bool {
    NATIVE_IRQ.load(core::sync::atomic::Ordering::Relaxed)
}

/// Runs [`Platform::membarrier`]: on return every other running thread has
/// executed a full memory barrier. `false` if there is no platform or it
/// cannot (then [`cpus_are_threads`] is `false` too).
pub fn membarrier() -> bool {
    get().is_some_and(|p| p.membarrier())
}

/// Runs [`Platform::membarrier_cpu`]: on return CPU `cpu` has executed a
/// full memory barrier (or runs no framework code). `false` if there is no
/// platform, it cannot, or the CPU did not answer.
pub fn membarrier_cpu(cpu: usize) -> bool {
    get().is_some_and(|p| p.membarrier_cpu(cpu))
}

/// Spins for a lock: the pause hint, and every `RELAX_EVERY` spins
/// [`Platform::cpu_relax`]. `spins` counts the caller's iterations.
#[inline]
pub fn spin_relax(spins: &mut u32) {
    const RELAX_EVERY: u32 = 128;
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(RELAX_EVERY)
        && let Some(p) = get()
    {
        p.cpu_relax();
    } else {
        core::hint::spin_loop();
    }
}

/// A kernel stack: `[bottom, top)` usable, the page below `bottom` unmapped.
#[derive(Debug)]
pub struct KernelStack {
    /// Lowest usable address.
    pub bottom: usize,
    /// One past the highest usable address (the initial stack pointer).
    pub top: usize,
    /// Platform-private bookkeeping (e.g. the physical block behind it).
    pub cookie: usize,
}

static PLATFORM: spin::Once<&'static dyn Platform> = spin::Once::new();

/// The installed platform's [`Platform::irq_flag_is_native`], cached so that
/// [`IrqGuard`] decides with one relaxed load.
static NATIVE_IRQ: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The installed platform's [`Platform::cpu_id_gs_offset`] (`usize::MAX`:
/// none), cached so that [`cpu_id`] decides with one relaxed load.
static GS_CPU_ID: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(usize::MAX);

/// Installs the platform. Only the first call has an effect.
pub fn set(p: &'static dyn Platform) {
    let p = *PLATFORM.call_once(|| p);
    let native = (cfg!(all(target_arch = "x86_64", target_os = "none"))
        || cfg!(not(target_os = "none")))
        && p.irq_flag_is_native();
    NATIVE_IRQ.store(native, core::sync::atomic::Ordering::Release);
    // Plain per-CPU flags need the asymmetric fence for the rare other
    // thread that takes them (a drain): without it the flags stay atomic.
    #[cfg(not(target_os = "none"))]
    THREAD_CPUS.store(
        p.cpu_id_is_per_thread() && p.membarrier(),
        core::sync::atomic::Ordering::Release,
    );
    if cfg!(all(target_arch = "x86_64", target_os = "none"))
        && let Some(off) = p.cpu_id_gs_offset()
    {
        GS_CPU_ID.store(off, core::sync::atomic::Ordering::Release);
    }
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    KERNEL_GS.store(
        p.cpu_line_offset_gs_offset() == Some(KERNEL_LINE_OFFSET_GS_OFFSET)
            && p.preempt_count_gs_offset() == Some(KERNEL_PREEMPT_COUNT_GS_OFFSET),
        core::sync::atomic::Ordering::Release,
    );
}

/// The saved RFLAGS of an inline interrupt save (`pushf; pop; cli`).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[inline(always)]
fn native_irq_save() -> u64 {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack and clears IF; only used once
    // the platform declared that this is all its irq_save does. Not `nomem`:
    // the asm is a compiler barrier, so no memory access of the critical
    // section moves before it.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags) };
    flags
}

/// Restores the RFLAGS a [`native_irq_save`] returned (`push; popf`, as
/// Linux's `native_restore_fl` did): IF as it was. Under QEMU's TCG `popf`
/// costs less than `sti`, which ends a translation block for its interrupt
/// shadow and leaves it unchained.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[inline(always)]
fn native_irq_restore(flags: u64) {
    // SAFETY: puts back the flags saved with interrupts in the state they
    // were; a compiler barrier like the save.
    unsafe { core::arch::asm!("push {}", "popfq", in(reg) flags) };
}

/// The installed platform, if any.
#[inline]
pub fn get() -> Option<&'static dyn Platform> {
    PLATFORM.get().copied()
}

/// Stops the machine through the platform (spins if none is installed).
pub fn exit(success: bool) -> ! {
    match get() {
        Some(p) => p.exit(success),
        None => loop {
            core::hint::spin_loop();
        },
    }
}

/// CPUs online through the platform (1 if none is installed).
pub fn nr_cpus() -> usize {
    get().map_or(1, |p| p.nr_cpus())
}

/// Runs `f` with interrupts masked, restoring the previous state after.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let _guard = IrqGuard::new();
    f()
}

/// [`without_interrupts`] that lends `f` the guard, for functions that take
/// it as proof that interrupts are masked (e.g. `task::this_cpu`).
#[inline]
pub fn with_irq_guard<R>(f: impl FnOnce(&IrqGuard) -> R) -> R {
    let guard = IrqGuard::new();
    f(&guard)
}

/// RAII form of irq_save / irq_restore.
#[must_use = "interrupts are restored as soon as the guard is dropped"]
pub struct IrqGuard {
    was_enabled: bool,
    /// RFLAGS at an inline save (0: saved through the platform).
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    flags: u64,
}

impl IrqGuard {
    /// Saves the interrupt state and masks interrupts until the guard drops.
    #[inline]
    pub fn new() -> Self {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        if NATIVE_IRQ.load(core::sync::atomic::Ordering::Relaxed) {
            let flags = native_irq_save();
            return Self {
                was_enabled: flags & (1 << 9) != 0,
                flags,
            };
        }
        #[cfg(not(target_os = "none"))]
        if NATIVE_IRQ.load(core::sync::atomic::Ordering::Relaxed) {
            return Self {
                was_enabled: thread_irq_save(),
            };
        }
        let was_enabled = get().map(|p| p.irq_save()).unwrap_or(false);
        Self {
            was_enabled,
            #[cfg(all(target_arch = "x86_64", target_os = "none"))]
            flags: 0,
        }
    }

    /// Whether interrupts were enabled when the guard was taken.
    #[inline]
    pub fn were_enabled(&self) -> bool {
        self.was_enabled
    }
}

impl Default for IrqGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IrqGuard {
    #[inline]
    fn drop(&mut self) {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        // RFLAGS bit 1 is always set: a native save is never 0.
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        if self.flags != 0 {
            native_irq_restore(self.flags);
            return;
        }
        #[cfg(not(target_os = "none"))]
        if NATIVE_IRQ.load(core::sync::atomic::Ordering::Relaxed) {
            thread_irq_restore(self.was_enabled);
            return;
        }
        if let Some(p) = get() {
            p.irq_restore(self.was_enabled);
        }
    }
}

// ---------------------------------------------------------------------------
// Hosted builds: every thread a CPU of its own

/// The per-thread state of a hosted build (the framework as a library in a
/// process, e.g. `host/`): each thread's interrupt flag and cached CPU
/// number. Const-initialised and without destructors, so they stay usable
/// while a thread exits. Read inline by [`IrqGuard`] and [`cpu_id`]: the
/// allocator's per-CPU fast paths pay for every call through the platform.
#[cfg(not(target_os = "none"))]
mod hosted {
    extern crate std;

    use core::cell::Cell;

    /// No CPU number cached for this thread.
    pub(super) const NO_CPU: usize = usize::MAX;

    std::thread_local! {
        /// This thread's interrupt flag (enabled until masked).
        pub(super) static IRQS_ENABLED: Cell<bool> = const { Cell::new(true) };
        /// This thread's CPU number from the platform, or NO_CPU.
        pub(super) static CPU: Cell<usize> = const { Cell::new(NO_CPU) };
    }

    /// Asks the platform; keeps the answer if it is the thread's for good.
    #[cold]
    #[inline(never)]
    pub(super) fn cpu_id_slow(p: &dyn super::Platform) -> usize {
        let id = p.cpu_id();
        if p.cpu_id_is_per_thread() {
            CPU.with(|c| c.set(id));
        }
        id
    }
}

/// Hosted builds: masks the calling thread's interrupt flag; returns
/// whether it was enabled. What [`IrqGuard`] does inline when the platform
/// says [`Platform::irq_flag_is_native`]; such a platform's
/// [`Platform::irq_save`] calls it, so both agree.
#[cfg(not(target_os = "none"))]
#[inline]
pub fn thread_irq_save() -> bool {
    hosted::IRQS_ENABLED.with(|e| e.replace(false))
}

/// Hosted builds: undoes [`thread_irq_save`].
#[cfg(not(target_os = "none"))]
#[inline]
pub fn thread_irq_restore(was_enabled: bool) {
    if was_enabled {
        hosted::IRQS_ENABLED.with(|e| e.set(true));
    }
}

/// Hosted builds: drops the calling thread's cached CPU number (see
/// [`Platform::cpu_id_is_per_thread`]); the next [`cpu_id`] asks the
/// platform again. A platform calls it before it gives the number to
/// another thread (the thread is exiting).
#[cfg(not(target_os = "none"))]
pub fn forget_thread_cpu() {
    hosted::CPU.with(|c| c.set(hosted::NO_CPU));
}
