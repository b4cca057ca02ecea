//! The x86_64 platform booted by QEMU: PVH entry, descriptor tables, paging,
//! serial console, PIC + PIT timer, the debug-exit device, and the other
//! CPUs (ACPI MADT, local APIC, SMP bring-up).

pub mod acpi;
pub mod apic;
mod boot;
pub mod context;
pub mod gdt;
pub mod interrupts;
pub mod paging;
pub mod pic;
pub mod pvh;
pub mod qemu_exit;
pub mod serial;
pub mod smp;
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
static SERIAL2: spin::Mutex<serial::Serial> = spin::Mutex::new(serial::Serial::com2());

/// Whether the console writes to COM2 (`format=json`: COM1 carries data only).
static CONSOLE_ON_COM2: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the command line asks for `format=json` (the last `format=` wins,
/// as when the command line is parsed).
fn wants_json(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|t| t.strip_prefix("format="))
        == Some("json")
}

impl Platform for Qemu {
    fn irq_flag_is_native(&self) -> bool {
        true // irq_save / irq_restore below are `cli` and `sti` alone
    }

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
        let port = if CONSOLE_ON_COM2.load(core::sync::atomic::Ordering::Relaxed) {
            &SERIAL2
        } else {
            &SERIAL
        };
        let _ = port.lock().write_str(s);
    }

    /// COM1, `\n` line ends: QEMU's `-serial stdio`, the runner's standard
    /// output.
    fn data_write(&self, s: &str) {
        SERIAL.lock().write_raw(s);
    }

    fn wait_for_interrupt(&self) {
        x86_64::instructions::interrupts::enable_and_hlt();
    }

    fn send_reschedule(&self, cpu: usize) {
        smp::send_reschedule(cpu);
    }

    fn idle_poll(&self) {
        smp::run_pending_call();
    }

    /// The PVH memory map's RAM less the kernel image, the early heap and
    /// the RAM disk (the boot information's `usable` map).
    fn usable_memory(&self) -> crate::bootinfo::MemoryMap {
        BOOT_INFO
            .get()
            .map(|b| b.usable.clone())
            .unwrap_or_default()
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

    unsafe fn init_context(&self, stack_top: usize, entry: extern "C" fn() -> !) -> usize {
        // SAFETY: the caller passes the top of an unused stack from
        // `alloc_kernel_stack`, which is what `context::init_context` needs.
        unsafe { context::init_context(stack_top, entry) }
    }

    unsafe fn switch_context(&self, prev: *mut usize, next: usize) {
        // SAFETY: the caller guarantees `next` is a context from init_context or an earlier save
        // and that interrupts are masked, as `context::switch_context` requires.
        unsafe { context::switch_context(prev, next) }
    }

    #[inline]
    fn cpu_id(&self) -> usize {
        smp::cpu_id()
    }

    fn cpu_id_gs_offset(&self) -> Option<usize> {
        Some(smp::CPU_ID_GS_OFFSET)
    }

    fn cpu_line_offset_gs_offset(&self) -> Option<usize> {
        Some(smp::LINE_OFFSET_GS_OFFSET)
    }

    fn preempt_count_gs_offset(&self) -> Option<usize> {
        Some(smp::PREEMPT_COUNT_GS_OFFSET)
    }

    fn membarrier_cpu(&self, cpu: usize) -> bool {
        smp::membarrier_cpu(cpu)
    }

    fn nr_cpus(&self) -> usize {
        smp::nr_cpus()
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

/// Size of the early heap. Boot takes it from usable RAM (not from the
/// image, so that the image stays small enough for small guests): once
/// kmalloc is up it only serves what was allocated before (a few KiB), and
/// task stacks if the page allocator could not start.
pub const EARLY_HEAP_BYTES: usize = 1 << 20;

/// Rust's allocator: the early heap until kmalloc is up, then kmalloc.
#[global_allocator]
pub static ALLOCATOR: KernelAllocator = KernelAllocator::new();

/// The early heap (in RAM taken at boot, reached through the direct map).
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
    /// The built-in command line, defined by [`entry_point!`](crate::entry_point).
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
    info.prepend_cmdline(builtin);
}

#[cfg(feature = "fs")]
static RAMDISK: spin::Once<Option<crate::fs::RamDisk>> = spin::Once::new();

/// The RAM disk reserved at boot with `ramdisk=`, if any.
#[cfg(feature = "fs")]
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

const MIB: u64 = 1 << 20;

/// Takes `bytes` for the RAM disk from the top of the largest usable region,
/// before the page allocator sees the memory map. `None` if no region can
/// hold it.
fn reserve_ramdisk(info: &mut BootInfo, bytes: u64) -> Option<()> {
    let bytes = bytes.div_ceil(4096) * 4096;
    let r = info
        .usable
        .regions()
        .iter()
        .copied()
        .max_by_key(|r| r.len())
        .filter(|r| r.len() >= bytes)?;
    let start = r.end - bytes;
    info.usable.carve(start, r.end);
    info.ramdisk = Some(crate::bootinfo::Region {
        start,
        end: r.end,
        kind: crate::bootinfo::RegionKind::Reserved,
    });
    Some(())
}

/// Takes the early heap from the lowest usable region that holds it.
fn reserve_early_heap(info: &mut BootInfo) -> Option<u64> {
    let bytes = EARLY_HEAP_BYTES as u64;
    let start = info
        .usable
        .regions()
        .iter()
        .find(|r| r.len() >= bytes)?
        .start;
    info.usable.carve(start, start + bytes);
    Some(start)
}

/// RAM that QEMU gave short of what boot needs (see [`check_memory`]).
struct MemoryShortfall {
    /// `-m` that would do, and what QEMU gave, in MiB.
    need_mib: u64,
    gave_mib: u64,
    ramdisk: Option<u64>,
    mem: Option<u64>,
}

impl core::fmt::Display for MemoryShortfall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "kreclaim needs at least {} MiB of RAM for ",
            self.need_mib
        )?;
        if let Some(r) = self.ramdisk {
            write!(f, "ramdisk={} MiB and ", r.div_ceil(MIB))?;
        }
        match self.mem {
            Some(m) => write!(f, "mem={} MiB", m.div_ceil(MIB))?,
            None => write!(
                f,
                "the page allocator's {} MiB minimum",
                crate::mm::page_alloc::MEM_MIN / MIB
            )?,
        }
        write!(
            f,
            " plus the kernel, its early heap and boot data; QEMU gave {} MiB (KRECLAIM_MEM, QEMU -m)",
            self.gave_mib
        )
    }
}

/// Checks the RAM QEMU gave against what boot needs: the early heap (unless
/// already taken from `info.usable`), the APs' stacks (`smp_bytes`), the RAM
/// disk (`ramdisk=`) and the page allocator (`mem=`, at least
/// [`MEM_MIN`](crate::mm::page_alloc::MEM_MIN)), on top of what the kernel
/// image, page 0 and the boot structures take. Allocates nothing: it may
/// run before the early heap exists.
fn check_memory(
    info: &BootInfo,
    heap_taken: bool,
    smp_bytes: u64,
    ramdisk: Option<u64>,
    mem: Option<u64>,
) -> Result<(), MemoryShortfall> {
    let ram_top = info
        .firmware_map
        .regions()
        .iter()
        .filter(|r| r.kind == crate::bootinfo::RegionKind::Ram)
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    let heap = if heap_taken {
        0
    } else {
        EARLY_HEAP_BYTES as u64
    };
    let page_alloc = mem.unwrap_or(0).max(crate::mm::page_alloc::MEM_MIN);
    let need = heap + smp_bytes + ramdisk.map_or(0, |b| b.div_ceil(4096) * 4096) + page_alloc;
    let usable = info.usable_bytes();
    if usable >= need {
        return Ok(());
    }
    // QEMU's -m is the top of RAM (less a few firmware pages) while all RAM
    // sits below the PCI hole; above, the RAM count is the better guess.
    let given = if ram_top <= 3 << 30 {
        ram_top
    } else {
        info.ram_bytes()
    };
    Err(MemoryShortfall {
        need_mib: (given + need - usable).div_ceil(MIB),
        gave_mib: given.div_ceil(MIB),
        ramdisk,
        mem,
    })
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
fn task_stack_guard(addr: u64) -> Option<crate::mm::inline_name::InlineName> {
    if !context::in_stack_guard(addr) {
        return None;
    }
    Some(crate::mm::inline_name::InlineName::new(
        crate::task::current().name(),
    ))
}

/// Whether EFER.NXE was enabled by the boot stub.
fn nx_enabled() -> bool {
    // SAFETY: reading EFER has no side effects.
    let efer = unsafe { x86_64::registers::model_specific::Msr::new(0xC000_0080).read() };
    efer & (1 << 11) != 0
}

/// First Rust code, called by the boot stub on the boot stack in long mode:
/// brings the CPU up, reserves boot memory, and hands over to
/// [`init::start_kernel`](crate::init::start_kernel) (Linux's `setup_arch`
/// and then `start_kernel`).
pub(crate) extern "C" fn kernel_entry(start_info: u32) -> ! {
    smp::init_bsp();
    SERIAL.lock().init();
    SERIAL2.lock().init();
    crate::platform::set(&QEMU);
    gdt::init();
    interrupts::init();
    smp::this_cpu().record_descriptor_tables();

    let mut parsed = BootInfo::new();
    // SAFETY: EBX from QEMU, inside the stub's identity-mapped first GiB.
    if let Err(e) = unsafe { pvh::parse(start_info, &mut parsed) } {
        crate::println!("kreclaim: cannot read the PVH start info: {e:?}");
        exit_qemu(ExitCode::Failure);
    }
    prepend_builtin_cmdline(&mut parsed);
    // From here on, with `format=json`, what people read (boot lines, the
    // log, lockdep reports, errors) goes to COM2 and COM1 keeps the JSON.
    if wants_json(parsed.cmdline()) {
        CONSOLE_ON_COM2.store(true, core::sync::atomic::Ordering::Relaxed);
    }
    // Refuse a command line that cannot be kept whole rather than run with
    // part of it.
    if let Some(p) = parsed.cmdline_problem() {
        crate::println!("kreclaim: {p}");
        exit_qemu(ExitCode::Failure);
    }
    paging::init(&parsed.firmware_map, nx_enabled());
    let smp_bytes = smp::discover();
    if let Err(short) = check_memory(&parsed, false, smp_bytes, None, None) {
        crate::println!("{short}");
        exit_qemu(ExitCode::Failure);
    }
    let Some(heap) = reserve_early_heap(&mut parsed) else {
        crate::println!(
            "kreclaim: no usable RAM region holds the {EARLY_HEAP_BYTES}-byte early heap"
        );
        exit_qemu(ExitCode::Failure);
    };
    // SAFETY: RAM just removed from the usable map, direct mapped, ours alone.
    unsafe {
        ALLOCATOR
            .early()
            .init(paging::phys_to_virt(heap), EARLY_HEAP_BYTES);
    }
    pic::init();
    stacks::set_dynamic_guard_lookup(task_stack_guard);
    timer::set_tick_hook(|_| {
        smp::tlb_sync_local();
        crate::task::on_tick()
    });
    timer::init();
    crate::console::init_logger(log::LevelFilter::Info);
    // The keys that size memory act now; main parses the command line
    // again and reports bad tokens.
    let early = crate::init::EarlyParams::parse(parsed.cmdline());
    if let Err(short) = check_memory(&parsed, true, smp_bytes, early.ramdisk, early.mem) {
        crate::println!("{short}");
        exit_qemu(ExitCode::Failure);
    }
    if let Some(bytes) = early.ramdisk
        && reserve_ramdisk(&mut parsed, bytes).is_none()
    {
        crate::println!(
            "kreclaim: ramdisk={} MiB does not fit in one RAM region (largest usable {} MiB)",
            bytes.div_ceil(MIB),
            parsed
                .usable
                .regions()
                .iter()
                .map(|r| r.len())
                .max()
                .unwrap_or(0)
                / MIB
        );
        exit_qemu(ExitCode::Failure);
    }
    smp::boot_aps(&mut parsed);
    let info: &'static BootInfo = BOOT_INFO.call_once(|| parsed);
    crate::init::start_kernel(info, &early, &ARCH_HOOKS)
}

/// Task stacks come from the page allocator once it is up.
static ARCH_HOOKS: crate::init::ArchHooks = crate::init::ArchHooks {
    page_alloc_ready: || context::set_frame_source(page_alloc_stack_frames, page_alloc_stack_free),
};

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

/// The kernel image's fast-path data: `.data.kreclaim_hot`, which the linker
/// script puts first in `.data` (start, end). Every CPU's `gs` block, the
/// slab's and page allocator's fast flags, the kmalloc class tables, the
/// slab's mem_map fast map and its empty-sheaf sentinel live there, on
/// consecutive pages. Under QEMU's TCG the data TLB is direct mapped by
/// page number (64-256 entries, resized by use): pages a multiple of 64
/// apart take the same entry, and two such pages read on every operation
/// evict each other each time (a victim-TLB swap under a lock, about 40
/// cycles). Before, the CPU's `gs` block and kmalloc-64's cache were 256
/// pages apart, and `bench=mm`'s kmalloc-64 churn cost 225-235 cycles a
/// step instead of about 150.
pub fn hot_data_range() -> (usize, usize) {
    unsafe extern "C" {
        static __kreclaim_hot_start: u8;
        static __kreclaim_hot_end: u8;
    }
    (
        &raw const __kreclaim_hot_start as usize,
        &raw const __kreclaim_hot_end as usize,
    )
}
