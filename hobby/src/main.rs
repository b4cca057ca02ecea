//! A hobby kernel that embeds kreclaim's framework without kreclaim's own
//! kernel: its own PVH boot stub, its own `Platform`, no scheduler (it
//! drives background reclaim itself). `cargo run -p kreclaim-hobby`.
#![no_std]
#![no_main]

extern crate alloc;
use core::sync::atomic::{AtomicU64, Ordering};
use kreclaim::bootinfo::MemoryMap;
use kreclaim::mm::{global_alloc::KernelAllocator, page_alloc, slab::kmalloc, vmscan};
use kreclaim::platform::{self, Platform};
use kreclaim::prelude::*;

// QEMU enters `pvh_start32` (named by the Xen note) in 32-bit protected mode
// with paging off. Identity-map the first GiB with 2 MiB pages, enter long
// mode and call `hobby_main` on our stack.
core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4, 4, 18          /* "Xen\0", 4-byte desc, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start32
    .section .bss.boot, "aw", @nobits
    .p2align 12
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096
stack: .skip 65536
stack_top:
    .section .rodata.boot, "a"
    .p2align 3
gdt: .quad 0, 0x00AF9A000000FFFF
gdt_ptr: .word 15
    .long gdt
    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb
    mov esp, offset stack_top
    mov dword ptr [pml4], offset pdpt + 3
    mov dword ptr [pdpt], offset pd + 3
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83            /* present, writable, 2 MiB */
    mov dword ptr [pd + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jne 1b
    mov eax, offset pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x620           /* PAE, OSFXSR, OSXMMEXCPT (SSE) */
    mov cr4, eax
    mov ecx, 0xC0000080     /* EFER.LME */
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    and eax, 0xFFFFFFFB     /* no FPU emulation */
    or eax, 0x80000002      /* paging, monitor coprocessor */
    mov cr0, eax
    lgdt [gdt_ptr]
    push 8
    mov eax, offset long_mode
    push eax
    retf
    .code64
long_mode:
    call hobby_main
"#
);

/// The platform: one CPU, interrupts never enabled, serial COM1, QEMU's
/// debug-exit device. Everything else keeps the trait's defaults.
struct Hobby;

fn outb(port: u16, v: u8) {
    // SAFETY: port I/O to COM1 and the debug-exit device has no memory effects.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v) };
}

impl Platform for Hobby {
    fn irq_save(&self) -> bool {
        false
    }
    fn irq_restore(&self, _was_enabled: bool) {}
    fn now_ns(&self) -> u64 {
        self.cycles() // about 1 GHz; a real kernel calibrates
    }
    fn cycles(&self) -> u64 {
        // SAFETY: rdtsc reads a counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    fn console_write(&self, s: &str) {
        s.bytes().for_each(|b| outb(0x3f8, b));
    }
    /// One thread, interrupts never enabled: it may always sleep (so `Box`
    /// and `Vec` allocate GFP_KERNEL, not GFP_ATOMIC).
    fn may_sleep(&self) -> bool {
        true
    }
    /// The page-frame source: the RAM array (a real kernel reads its memory map).
    fn usable_memory(&self) -> MemoryMap {
        let start = &raw mut RAM as u64;
        MemoryMap::from_ram(start, start + (16 << 20))
    }
    fn exit(&self, success: bool) -> ! {
        outb(0xf4, if success { 0x10 } else { 0x11 }); // QEMU exits 33 or 35
        loop {
            core::hint::spin_loop();
        }
    }
}

/// Rust's allocator: an early heap until kmalloc is up (bring-up takes about
/// 20 KiB of it: the kmalloc caches' per-CPU sheaf slots), then kmalloc with
/// the scope's GFP flags.
#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator::new();
static mut EARLY_HEAP: [u8; 32 << 10] = [0; 32 << 10];
/// The RAM the platform gives the page allocator.
static mut RAM: [u8; 16 << 20] = [0; 16 << 20];

/// A cache of 1 KiB objects kept for reuse; reclaim may free them, but only
/// where filesystem reclaim is allowed (as for an inode cache).
type Obj = [u8; 1024];
static CACHE: TypedCache<Obj> = TypedCache::new_static("hobby_obj", SlabFlags::empty());
static POOL: SpinLock<KVec<SlabBox<'static, Obj>>> =
    SpinLock::new(KVec::new(), lock_class!("pool"));
static CALLS: AtomicU64 = AtomicU64::new(0);
struct PoolShrinker;

impl Shrinker for PoolShrinker {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        CountObjects::new(POOL.lock().len() as u64)
    }
    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        CALLS.fetch_add(1, Ordering::Relaxed);
        if !sc.reclaim_fs_allowed() {
            return ScanObjects::STOP;
        }
        let mut pool = POOL.lock();
        let n = sc.nr_to_scan().min(pool.len() as u64);
        (0..n).for_each(|_| drop(pool.pop()));
        ScanObjects::freed(n)
    }
}

/// Allocates single pages with `gfp` until direct reclaim has run `runs`
/// more times or an allocation fails; returns how many it got (kept).
fn fill(gfp: Gfp, runs: u64) -> u64 {
    let goal = vmscan::stats().snapshot().direct_runs + runs;
    let mut got = 0;
    while vmscan::stats().snapshot().direct_runs < goal && alloc_pages(gfp, 0).is_ok() {
        got += 1;
    }
    got
}

#[unsafe(no_mangle)]
extern "C" fn hobby_main() -> ! {
    platform::set(&Hobby);
    // SAFETY: called once, before anything allocates; nothing else uses the arrays.
    unsafe {
        ALLOCATOR
            .early()
            .init(&raw mut EARLY_HEAP as *mut u8, 32 << 10)
    };
    page_alloc::init_from_platform(None, None).expect("page allocator");
    if let Err(e) = kmalloc::kmalloc_init() {
        let (used, size) = ALLOCATOR.early().usage();
        println!("hobby: {e}; early heap {used} of {size} bytes in use");
        platform::exit(false);
    }

    CACHE.create().expect("cache");
    let mut pool = KVec::with_capacity(2048, GFP_KERNEL).expect("pool");
    while pool.len() < 2048 {
        let obj = CACHE.alloc(GFP_KERNEL, [0; 1024]).expect("object");
        pool.push(obj, GFP_KERNEL)
            .map_err(|(_, e)| e)
            .expect("pool");
    }
    *POOL.lock() = pool; // never allocate under POOL: reclaim takes it
    let _reg = ShrinkerBuilder::new("hobby_pool")
        .register(PoolShrinker)
        .expect("shrinker");
    println!(
        "hobby: {} free pages, pool of {}",
        page_alloc::nr_free_pages(),
        POOL.lock().len()
    );

    let nofs = {
        let _nofs = MemallocScope::nofs();
        fill(GFP_KERNEL | Gfp::__GFP_NOWARN, 1) // may fail: a value, not a crash
    };
    let (calls, nofs_kept) = (CALLS.load(Ordering::Relaxed), POOL.lock().len());
    println!("hobby: NOFS scope: {nofs} pages, shrinker called {calls}x, pool kept {nofs_kept}");
    let kernel = fill(GFP_KERNEL, 3);
    let (calls, kernel_kept) = (CALLS.load(Ordering::Relaxed), POOL.lock().len());
    println!("hobby: GFP_KERNEL: {kernel} pages, shrinker called {calls}x, pool now {kernel_kept}");
    // GFP_NOWAIT never reclaims: it runs down to the min watermark and
    // fails. Our "scheduler" then runs kswapd's step, as its idle loop would.
    let nowait = fill(GFP_NOWAIT | Gfp::__GFP_NOWARN, 1);
    let balanced = vmscan::kswapd_balance();
    let pool = POOL.lock().len();
    println!(
        "hobby: GFP_NOWAIT: {nowait} pages; kswapd_balance reclaimed {balanced}, pool now {pool}"
    );
    println!("hobby: reclaim: {}", vmscan::stats().snapshot());
    platform::exit(nofs_kept == 2048 && kernel_kept < 2048 && balanced > 0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("hobby: PANIC: {info}");
    platform::exit(false)
}
