//! What the framework needs from the kernel it runs in.
//!
//! A hobby OS that embeds kreclaim implements [`Platform`] and installs it
//! with [`set`]; the QEMU kernel in `arch::x86_64` is one such platform.
//! Until one is installed, interrupts are treated as always masked and time
//! stands still, which is right for single-threaded host use.

#![deny(missing_docs)]

/// Interrupt masking, time and console for the framework.
pub trait Platform: Sync {
    /// Masks interrupts; returns whether they were enabled.
    fn irq_save(&self) -> bool;
    /// Undoes [`Platform::irq_save`].
    fn irq_restore(&self, was_enabled: bool);
    /// The number of the CPU running the caller, below [`NR_CPUS`]: the
    /// index of per-CPU data. Only meaningful with interrupts (or
    /// preemption) masked, since the caller may move to another CPU
    /// otherwise. The default is 0, for platforms with one CPU.
    fn cpu_id(&self) -> usize {
        0
    }
    /// Monotonic nanoseconds since boot.
    fn now_ns(&self) -> u64;
    /// A cheap, monotonic cycle counter for benchmarks (TSC on x86_64).
    fn cycles(&self) -> u64;
    /// Writes console text.
    fn console_write(&self, s: &str);
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
    /// Called now and then by a CPU spinning for a lock (Linux's
    /// `cpu_relax`, seldom). The default is the CPU's pause hint; a platform
    /// whose "CPUs" are threads that the host may preempt (the host build)
    /// yields, so that a descheduled lock holder gets to run.
    fn cpu_relax(&self) {
        core::hint::spin_loop();
    }
    /// Waits for the next interrupt (idle). May return spuriously.
    fn wait_for_interrupt(&self) {}
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
    get().map_or(0, |p| p.cpu_id())
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

/// Installs the platform. Only the first call has an effect.
pub fn set(p: &'static dyn Platform) {
    PLATFORM.call_once(|| p);
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
}

impl IrqGuard {
    /// Saves the interrupt state and masks interrupts until the guard drops.
    #[inline]
    pub fn new() -> Self {
        let was_enabled = get().map(|p| p.irq_save()).unwrap_or(false);
        Self { was_enabled }
    }

    /// Whether interrupts were enabled when the guard was taken.
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
        if let Some(p) = get() {
            p.irq_restore(self.was_enabled);
        }
    }
}
