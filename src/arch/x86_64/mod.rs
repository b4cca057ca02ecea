//! The x86_64 platform booted by QEMU: PVH entry, descriptor tables, paging,
//! serial console, PIC + PIT timer, and the debug-exit device.

mod boot;
pub mod context;
pub mod gdt;
pub mod interrupts;
pub mod paging;
pub mod pic;
pub mod pvh;
pub mod qemu_exit;
pub mod serial;
pub mod stacks;
pub mod timer;

use crate::bootinfo::BootInfo;
use crate::mm::early_heap::EarlyHeap;
use crate::mm::global_alloc::KernelAllocator;
use crate::platform::Platform;
use qemu_exit::{ExitCode, exit_qemu};

/// The QEMU platform as the framework sees it.
pub struct Qemu;

static SERIAL: spin::Mutex<serial::Serial> = spin::Mutex::new(serial::Serial::com1());

impl Platform for Qemu {
    #[inline]
    fn irq_save(&self) -> bool {
        let was = x86_64::instructions::interrupts::are_enabled();
        if was {
            x86_64::instructions::interrupts::disable();
        }
        was
    }

    #[inline]
    fn irq_restore(&self, was_enabled: bool) {
        if was_enabled {
            x86_64::instructions::interrupts::enable();
        }
    }

    fn now_ns(&self) -> u64 {
        timer::now_ns()
    }

    fn cycles(&self) -> u64 {
        timer::rdtsc()
    }

    fn console_write(&self, s: &str) {
        use core::fmt::Write;
        let mut serial = SERIAL.lock();
        let _ = serial.write_str(s);
    }

    fn wait_for_interrupt(&self) {
        x86_64::instructions::interrupts::enable_and_hlt();
    }

    #[inline]
    fn phys_to_virt(&self, pa: u64) -> *mut u8 {
        paging::phys_to_virt(pa)
    }

    #[inline]
    fn virt_to_phys(&self, va: *const u8) -> u64 {
        paging::virt_to_phys(va as u64)
    }

    fn alloc_kernel_stack(&self, bytes: usize) -> Option<crate::platform::KernelStack> {
        context::alloc_stack(bytes)
    }

    fn free_kernel_stack(&self, stack: crate::platform::KernelStack) {
        context::free_stack(stack)
    }

    fn init_context(&self, stack_top: usize, entry: extern "C" fn() -> !) -> usize {
        context::init_context(stack_top, entry)
    }

    unsafe fn switch_context(&self, prev: *mut usize, next: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { context::switch_context(prev, next) }
    }

    fn exit(&self, success: bool) -> ! {
        exit_qemu(if success {
            ExitCode::Success
        } else {
            ExitCode::Failure
        })
    }
}

static QEMU: Qemu = Qemu;

/// Size of the early heap inside the kernel image.
pub const EARLY_HEAP_BYTES: usize = 8 << 20;

#[repr(C, align(4096))]
struct HeapArena([u8; EARLY_HEAP_BYTES]);
static mut EARLY_HEAP_ARENA: HeapArena = HeapArena([0; EARLY_HEAP_BYTES]);

/// Rust's allocator: the early heap until kmalloc is up, then kmalloc.
#[global_allocator]
pub static ALLOCATOR: KernelAllocator = KernelAllocator::new();

/// The early heap (inside the kernel image).
pub fn early_heap() -> &'static EarlyHeap {
    ALLOCATOR.early()
}

static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

/// The boot information (valid once the kernel's main function runs).
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO
        .get()
        .expect("boot_info() called before boot finished")
}

unsafe extern "Rust" {
    /// The kernel's main function, defined with [`entry_point!`](crate::entry_point).
    fn kreclaim_kernel_main(boot: &'static BootInfo) -> !;
    /// The built-in command line, also defined by `entry_point!`.
    fn kreclaim_builtin_cmdline() -> &'static str;
}

/// Puts the built-in command line in front of the boot loader's (Linux's
/// CONFIG_CMDLINE without CONFIG_CMDLINE_OVERRIDE).
fn prepend_builtin_cmdline(info: &mut BootInfo) {
    // SAFETY: defined by the binary through entry_point!.
    let builtin = unsafe { kreclaim_builtin_cmdline() }.trim();
    if builtin.is_empty() {
        return;
    }
    let mut buf = [0u8; crate::bootinfo::MAX_CMDLINE];
    let mut n = 0;
    let total = builtin.len() + 1 + info.cmdline().len();
    for part in [builtin.as_bytes(), b" ", info.cmdline().as_bytes()] {
        let take = part.len().min(buf.len() - n);
        buf[n..n + take].copy_from_slice(&part[..take]);
        n += take;
    }
    let truncated = info.cmdline_truncated || total > buf.len();
    info.set_cmdline(&buf[..n]);
    info.cmdline_truncated = truncated;
}

static RAMDISK: spin::Once<Option<crate::fs::RamDisk>> = spin::Once::new();

/// The RAM disk reserved at boot with `ramdisk=`, if any.
pub fn boot_ramdisk() -> Option<&'static crate::fs::RamDisk> {
    RAMDISK
        .call_once(|| {
            let r = boot_info().ramdisk?;
            // SAFETY: reserved at boot for this purpose, outside the page
            // allocator, reachable through the direct map; created once.
            Some(unsafe {
                crate::fs::RamDisk::new(paging::phys_to_virt(r.start), r.len() as usize, 4096)
            })
        })
        .as_ref()
}

/// Takes `bytes` for the RAM disk from the top of the largest usable region,
/// before the page allocator sees the memory map.
fn reserve_ramdisk(info: &mut BootInfo, bytes: u64) {
    let bytes = bytes.div_ceil(4096) * 4096;
    let Some(r) = info
        .usable
        .regions()
        .iter()
        .copied()
        .max_by_key(|r| r.len())
    else {
        return;
    };
    if r.len() < bytes + (8 << 20) {
        crate::println!(
            "kreclaim: ramdisk={} MiB does not fit (largest usable region {} MiB, 8 MiB must remain); no RAM disk",
            bytes >> 20,
            r.len() >> 20
        );
        return;
    }
    let start = r.end - bytes;
    info.usable.carve(start, r.end);
    info.ramdisk = Some(crate::bootinfo::Region {
        start,
        end: r.end,
        kind: crate::bootinfo::RegionKind::Reserved,
    });
}

/// Stack frames from the page allocator (owner Stack, not zeroed).
fn page_alloc_stack_frames(pages: usize) -> Option<u64> {
    use crate::mm::page_alloc::{self, PageOwner};
    let order = pages.next_power_of_two().trailing_zeros();
    let pa = page_alloc::alloc_pages(crate::mm::gfp::GFP_KERNEL, order).ok()?;
    page_alloc::set_page_owner(pa, order, PageOwner::Stack);
    Some(pa.as_u64())
}

fn page_alloc_stack_free(pa: u64, pages: usize) {
    let order = pages.next_power_of_two().trailing_zeros();
    crate::mm::page_alloc::free_pages(crate::mm::page_alloc::PhysAddr::new(pa), order);
}

/// Exits QEMU with failure after a fatal report (exception or panic).
pub fn fatal_exit() -> ! {
    crate::harness::abort_current(format_args!("the kernel died (see the report above)"))
}

/// Names the task whose stack guard page holds `addr`: a stack overflow
/// happens on the running task's own stack.
fn task_stack_guard(addr: u64) -> Option<&'static str> {
    if !context::in_stack_guard(addr) {
        return None;
    }
    let name = crate::task::current().name();
    // SAFETY: only used to report a fatal fault; the running task (and its
    // name) stays alive because it never runs again.
    Some(unsafe { core::mem::transmute::<&str, &'static str>(name) })
}

/// Whether EFER.NXE was enabled by the boot stub.
fn nx_enabled() -> bool {
    // SAFETY: reading EFER has no side effects.
    let efer = unsafe { x86_64::registers::model_specific::Msr::new(0xC000_0080).read() };
    efer & (1 << 11) != 0
}

/// First Rust code, called by the boot stub on the boot stack in long mode.
pub(crate) extern "C" fn kernel_entry(start_info: u32) -> ! {
    SERIAL.lock().init();
    crate::platform::set(&QEMU);
    gdt::init();
    interrupts::init();

    let mut parsed = BootInfo::new();
    // SAFETY: EBX from QEMU, inside the stub's identity-mapped first GiB.
    if let Err(e) = unsafe { pvh::parse(start_info, &mut parsed) } {
        crate::println!("kreclaim: cannot read the PVH start info: {e:?}");
        exit_qemu(ExitCode::Failure);
    }
    prepend_builtin_cmdline(&mut parsed);
    paging::init(&parsed.firmware_map, nx_enabled());
    // SAFETY: the arena is ours alone and handed over once.
    unsafe {
        ALLOCATOR
            .early()
            .init((&raw mut EARLY_HEAP_ARENA).cast(), EARLY_HEAP_BYTES);
    }
    pic::init();
    stacks::set_dynamic_guard_lookup(task_stack_guard);
    timer::set_tick_hook(|_| crate::task::on_tick());
    timer::init();
    crate::console::init_logger(log::LevelFilter::Info);
    // The keys that size memory act now; main parses the command line
    // again and reports bad tokens.
    let early = crate::config::Config::parse_early(parsed.cmdline());
    if let Some(bytes) = early.ramdisk {
        reserve_ramdisk(&mut parsed, bytes);
    }
    let info: &'static BootInfo = BOOT_INFO.call_once(|| parsed);
    match crate::mm::page_alloc::init(&info.usable, early.mem, early.min_free_kbytes) {
        Ok(()) => context::set_frame_source(page_alloc_stack_frames, page_alloc_stack_free),
        Err(e) => crate::println!("kreclaim: {e}; task stacks stay on the early heap"),
    }
    if let Some((flags, only)) = &early.slab_debug {
        crate::mm::slab::set_global_debug(*flags, only.clone());
    }
    if crate::mm::page_alloc::is_ready() {
        crate::mm::slab::kmalloc::kmalloc_init();
        let _ = crate::mm::page_alloc::register_oom_reporter(crate::mm::slab::show_slabinfo);
        let _ = crate::mm::page_alloc::register_oom_reporter(crate::mm::shrinker::show_shrinkers);
    }
    crate::task::init(crate::task::SchedMode::Preemptive);
    if crate::mm::page_alloc::is_ready()
        && let Err(e) = crate::mm::vmscan::kswapd_run()
    {
        crate::println!("kreclaim: cannot start kswapd: {e:?}");
    }
    // SAFETY: defined by the binary through entry_point!.
    unsafe { kreclaim_kernel_main(info) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    // SAFETY: we never return to the panicking code.
    unsafe { crate::console::force_unlock() };
    // Nothing here may allocate: the panic may be an allocation failure.
    static PANICKING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if PANICKING.swap(true, core::sync::atomic::Ordering::SeqCst) {
        crate::println!("KERNEL PANIC while panicking: {}", info.message());
        exit_qemu(ExitCode::Failure);
    }
    let loc = PanicLocation(info.location());
    crate::println!("KERNEL PANIC at {}: {}", loc, info.message());
    if crate::harness::panic_was_expected(&info.message()) {
        crate::harness::pass_current_and_finish()
    }
    crate::harness::abort_current(format_args!("panicked at {}: {}", loc, info.message()))
}

struct PanicLocation<'a>(Option<&'a core::panic::Location<'a>>);

impl core::fmt::Display for PanicLocation<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(l) => write!(f, "{}:{}:{}", l.file(), l.line(), l.column()),
            None => f.write_str("<unknown>"),
        }
    }
}
