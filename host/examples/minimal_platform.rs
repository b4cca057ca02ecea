//! The smallest platform a hobby OS writes to embed kreclaim's framework,
//! compiled (and run) on the host: `cargo run --example minimal_platform`
//! from host/.
//!
//! A kernel implements one trait, `kreclaim::platform::Platform`, installs it
//! with `platform::set`, hands its free RAM to `page_alloc::init` and calls
//! `kmalloc_init`. Everything below `// ---- what the kernel gets` is then
//! available. Nothing here depends on the host except `main` and the
//! console (replace `print!` with your serial port).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kreclaim::bootinfo::{MemoryMap, Region, RegionKind};
use kreclaim::mm::gfp::{GFP_KERNEL, GFP_NOFS};
use kreclaim::mm::page_alloc;
use kreclaim::mm::scope::MemallocScope;
use kreclaim::mm::shrinker::{CountObjects, ScanObjects, ShrinkControl, Shrinker, ShrinkerBuilder};
use kreclaim::mm::slab::kmalloc::{self, KBox, KVec};
use kreclaim::mm::slab::{SlabFlags, TypedCache};
use kreclaim::platform::{self, Platform};

/// A single-CPU kernel's platform. Required: IRQ masking, a clock, a cycle
/// counter, a console. Optional (defaults shown in `Platform`'s docs):
/// `phys_to_virt` / `virt_to_phys` (identity by default: fine for a kernel
/// that runs identity mapped, as here), `wait_for_interrupt`, and for kernel
/// threads `alloc_kernel_stack`, `free_kernel_stack`, `init_context`,
/// `switch_context` (then `task::init` starts the scheduler); `exit`.
struct MyPlatform {
    /// The interrupt flag (on real hardware: RFLAGS.IF, via cli/sti).
    irqs_on: AtomicBool,
    ticks: AtomicU64,
}

impl Platform for MyPlatform {
    fn irq_save(&self) -> bool {
        // Real kernel: read RFLAGS, `cli`, return the old IF.
        self.irqs_on.swap(false, Ordering::Acquire)
    }
    fn irq_restore(&self, was_enabled: bool) {
        // Real kernel: `sti` if it was set.
        if was_enabled {
            self.irqs_on.store(true, Ordering::Release);
        }
    }
    fn now_ns(&self) -> u64 {
        // Real kernel: the timer (TSC, HPET, PIT ticks).
        self.ticks.fetch_add(1000, Ordering::Relaxed)
    }
    fn cycles(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
    fn console_write(&self, s: &str) {
        // Real kernel: the serial port or the framebuffer.
        print!("{s}");
    }
}

static PLATFORM: MyPlatform = MyPlatform {
    irqs_on: AtomicBool::new(true),
    ticks: AtomicU64::new(0),
};

/// "RAM": in a real kernel, the usable regions of the firmware memory map,
/// reachable through `phys_to_virt`.
#[repr(C, align(4194304))]
struct Ram([u8; 16 << 20]);
static mut RAM: Ram = Ram([0; 16 << 20]);

/// A cache that reclaim may shrink: here, a pool of spare buffers.
struct SparePool(kreclaim::sync::SpinLock<KVec<KBox<[u8; 256]>>>);

impl Shrinker for SparePool {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        match self.0.lock().len() {
            0 => CountObjects::EMPTY,
            n => CountObjects::new(n as u64),
        }
    }
    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        let mut pool = self.0.lock();
        let mut freed = 0;
        while freed < sc.nr_to_scan() && pool.pop().is_some() {
            freed += 1;
        }
        ScanObjects::freed(freed)
    }
}

fn main() {
    // ---- bring-up, once, early in the kernel
    platform::set(&PLATFORM);
    let start = &raw mut RAM as u64;
    let mut ram = MemoryMap::new();
    ram.push(Region {
        start,
        end: start + (16 << 20),
        kind: RegionKind::Ram,
    });
    page_alloc::init(&ram, None, None).expect("page allocator");
    kmalloc::kmalloc_init().expect("kmalloc");

    // ---- what the kernel gets
    // Pages, with GFP flags, watermarks and reclaim; failure is a value.
    let pa = page_alloc::alloc_pages(GFP_KERNEL, 2).expect("4 pages");
    page_alloc::free_pages(pa, 2);
    // Typed slab caches.
    let inodes: TypedCache<[u64; 12]> = TypedCache::new("my_inode", SlabFlags::empty()).unwrap();
    let inode = inodes.alloc(GFP_KERNEL, [7; 12]).expect("an inode");
    // kmalloc, and Box/Vec that take GFP flags and return errors.
    let mut v: KVec<u32> = KVec::new();
    v.push(1, GFP_KERNEL).map_err(|(_, e)| e).unwrap();
    // Scoped NOFS: allocations below reclaim-critical code stop calling
    // into filesystems, without passing GFP_NOFS down every call chain.
    {
        let _nofs = MemallocScope::nofs();
        assert_eq!(
            kreclaim::mm::scope::current_gfp_context(GFP_KERNEL),
            GFP_NOFS
        );
    }
    // Shrinkers, called by direct reclaim when memory runs low.
    let pool = SparePool(kreclaim::sync::SpinLock::new(
        KVec::new(),
        kreclaim::lock_class!("spare pool"),
    ));
    for _ in 0..64 {
        let b = KBox::new([0u8; 256], GFP_KERNEL).unwrap();
        pool.0
            .lock()
            .push(b, GFP_KERNEL)
            .map_err(|(_, e)| e)
            .unwrap();
    }
    let reg = ShrinkerBuilder::new("spare pool").register(pool).unwrap();
    let freed = reg.shrink(GFP_KERNEL, 0);
    println!(
        "inode[0] = {}, vec {:?}, shrinker freed {freed}, {} pages free",
        inode[0],
        &v[..],
        page_alloc::nr_free_pages()
    );
    // Lockdep checks every SpinLock above; page_alloc::show_mem(),
    // slab::show_slabinfo() and shrinker::show_shrinkers() print the state.
}
