//! Generic kernel start (Linux's `init/main.c`): the architecture brings the
//! CPU up (descriptor tables, paging, console, timer, early heap, boot
//! information) and calls [`start_kernel`], which brings the subsystems up
//! in order and then runs the kernel's main function.
//!
//! Nothing here is specific to a platform: another boot path (a hobby OS's
//! own `arch`) fills in [`EarlyParams`] and [`ArchHooks`] and calls the
//! same function.

#![deny(missing_docs)]

use crate::bootinfo::BootInfo;
use crate::mm::slab::SlabFlags;
use alloc::string::String;

/// Command-line parameters that must act before the main function runs
/// (Linux's `early_param`): they size memory and set up the allocators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EarlyParams {
    /// `mem=`: RAM handed to the page allocator, in bytes (default: all).
    pub mem: Option<u64>,
    /// `ramdisk=`: bytes the architecture reserves for a RAM disk.
    pub ramdisk: Option<u64>,
    /// `min_free_kbytes=` (default: computed from managed memory).
    pub min_free_kbytes: Option<u64>,
    /// `slab_debug=`: debug flags for caches, optionally for one cache.
    pub slab_debug: Option<(SlabFlags, Option<String>)>,
}

impl EarlyParams {
    /// Linux's `parse_early_param`: every `key=value` token of `cmdline`
    /// that parses, ignoring errors (the main function reports them) and
    /// bare words (test filters). Without the `demo` feature (which holds
    /// the command-line parser) the defaults: a platform then fills the
    /// fields itself.
    pub fn parse(cmdline: &str) -> EarlyParams {
        #[cfg(feature = "demo")]
        {
            let c = crate::config::Config::parse_early(cmdline);
            EarlyParams {
                mem: c.mem,
                ramdisk: c.ramdisk,
                min_free_kbytes: c.min_free_kbytes,
                slab_debug: c.slab_debug,
            }
        }
        #[cfg(not(feature = "demo"))]
        {
            let _ = cmdline;
            EarlyParams::default()
        }
    }
}

/// What [`start_kernel`] calls back into the architecture for.
pub struct ArchHooks {
    /// Runs once the page allocator is up, before the first task is
    /// created (e.g. to take task stacks from it instead of the early heap).
    pub page_alloc_ready: fn(),
}

unsafe extern "Rust" {
    /// The kernel's main function, defined with [`entry_point!`](crate::entry_point).
    fn kreclaim_kernel_main(boot: &'static BootInfo) -> !;
}

/// Brings the subsystems up in order — page allocator, slab and kmalloc,
/// OOM reporters, tasks (waiting for every CPU to schedule), kswapd — then
/// runs the kernel's main function.
/// Called once by the architecture with the platform installed (the page
/// allocator takes its memory from
/// [`Platform::usable_memory`](crate::platform::Platform::usable_memory)) and
/// the console, the early heap and the timer working. A `min_free_kbytes=` that cannot work stops the machine
/// with one line saying so.
pub fn start_kernel(boot: &'static BootInfo, params: &EarlyParams, arch: &ArchHooks) -> ! {
    use crate::mm::{page_alloc, shrinker, slab, vmscan};
    match page_alloc::init_from_platform(params.mem, params.min_free_kbytes) {
        Ok(()) => (arch.page_alloc_ready)(),
        Err(e) => crate::println!("kreclaim: {e}; task stacks stay on the early heap"),
    }
    if let Some(kb) = params.min_free_kbytes
        && page_alloc::is_ready()
        && let Err(line) = check_min_free_kbytes(kb)
    {
        crate::println!("{line}");
        crate::platform::exit(false);
    }
    if let Some((flags, only)) = &params.slab_debug {
        slab::set_global_debug(*flags, only.clone());
    }
    if page_alloc::is_ready() {
        if let Err(e) = slab::kmalloc::kmalloc_init() {
            // Nothing after this point can allocate: stop with the cause.
            crate::println!("kreclaim: {e}");
            crate::platform::exit(false);
        }
        let _ = page_alloc::register_oom_reporter(slab::show_slabinfo);
        let _ = page_alloc::register_oom_reporter(shrinker::show_shrinkers);
    }
    crate::task::init(crate::task::SchedMode::Preemptive);
    wait_for_cpus_to_schedule();
    if page_alloc::is_ready()
        && let Err(e) = vmscan::kswapd_run()
    {
        crate::println!("kreclaim: cannot start kswapd: {e:?}");
    }
    // SAFETY: defined by the binary through entry_point!.
    unsafe { kreclaim_kernel_main(boot) }
}

/// Waits until every CPU the platform brought up runs its scheduler (has
/// entered [`task::run_idle`](crate::task::run_idle)), as Linux's
/// `smp_init` returns only with every CPU online. An AP enters at its next
/// interrupt after [`task::init`](crate::task::init); without this wait it
/// did so while the main function (a test case) already ran, taking no
/// tasks until then and allocating its run queue's room in the middle of
/// whatever was being measured. Bounded (10 s): a CPU that never enters is
/// reported and the kernel goes on without it.
fn wait_for_cpus_to_schedule() {
    let want = crate::platform::nr_cpus().min(crate::platform::NR_CPUS);
    let t0 = crate::time::now_ns();
    while crate::task::online_cpus() < want {
        if crate::time::now_ns().saturating_sub(t0) > 10_000_000_000 {
            crate::println!(
                "kreclaim: only {} of {want} CPUs entered the scheduler",
                crate::task::online_cpus()
            );
            return;
        }
        core::hint::spin_loop();
    }
}

/// Refuses a `min_free_kbytes=` whose high watermark would reach the
/// managed memory: kswapd could never balance the zone, and below the min
/// watermark nothing (not even the idle task's stack) could be allocated.
fn check_min_free_kbytes(kbytes: u64) -> Result<(), String> {
    use crate::mm::{page_alloc, zone::compute_watermarks};
    let managed = page_alloc::managed_pages();
    let fits = |kb: u64| compute_watermarks(managed, kb).high < managed;
    if fits(kbytes) {
        return Ok(());
    }
    // The largest value that fits: `fits` is monotonic in kbytes.
    let (mut lo, mut hi) = (0, kbytes);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    Err(alloc::format!(
        "kreclaim: min_free_kbytes={kbytes} is too large for the {} KiB the page allocator \
         manages (its high watermark must stay below that): use at most {lo}",
        managed * 4
    ))
}
