//! Benchmark workloads and the allocators they compare, shared by the
//! criterion benches (`benches/alloc.rs`) and `bench-summary`.
//!
//! Every allocator is driven through the same [`BenchAlloc`] interface with
//! `Layout`s; each peer gets its own arena of the same size as kreclaim's
//! and its thread-safe (locked) form, as a kernel would use it.

use kreclaim::mm::gfp::GFP_KERNEL;
use kreclaim::mm::slab::{KmemCache, SlabFlags, kmalloc};
use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// An allocator under test.
pub trait BenchAlloc {
    fn name(&self) -> &'static str;
    fn alloc(&self, layout: Layout) -> *mut u8;
    /// # Safety
    /// `p` came from [`BenchAlloc::alloc`] with `layout`.
    unsafe fn free(&self, p: *mut u8, layout: Layout);
}

/// Peers' arenas (bytes each).
pub const PEER_ARENA: usize = 256 << 20;

fn arena(bytes: usize) -> *mut u8 {
    let l = Layout::from_size_align(bytes, 4096).expect("arena layout");
    // SAFETY: non-zero size.
    let p = unsafe { System.alloc(l) };
    assert!(!p.is_null(), "no memory for a {bytes}-byte arena");
    p
}

/// kreclaim's kmalloc (`kmalloc_aligned` / `kfree`).
pub struct Kreclaim;

impl BenchAlloc for Kreclaim {
    fn name(&self) -> &'static str {
        "kreclaim"
    }
    fn alloc(&self, l: Layout) -> *mut u8 {
        kmalloc::kmalloc_aligned(l.size(), l.align(), GFP_KERNEL)
            .map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }
    unsafe fn free(&self, p: *mut u8, _l: Layout) {
        kmalloc::kfree(p)
    }
}

/// One kreclaim `kmem_cache` of a fixed object size (allocations must fit).
pub struct KreclaimCache(pub KmemCache);

impl KreclaimCache {
    pub fn new(name: &'static str, size: usize) -> Self {
        Self(KmemCache::create(name, size, 8, SlabFlags::empty(), None).expect("kmem_cache_create"))
    }
}

impl BenchAlloc for KreclaimCache {
    fn name(&self) -> &'static str {
        "kreclaim kmem_cache"
    }
    fn alloc(&self, _l: Layout) -> *mut u8 {
        self.0
            .alloc(GFP_KERNEL)
            .map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }
    unsafe fn free(&self, p: *mut u8, _l: Layout) {
        // SAFETY: the caller passes a non-null object from `alloc` above
        // (this cache) that it no longer uses.
        unsafe { self.0.free(NonNull::new_unchecked(p)) }
    }
}

/// The host's system allocator (glibc malloc on Linux).
pub struct Sys;

impl BenchAlloc for Sys {
    fn name(&self) -> &'static str {
        "system"
    }
    fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: callers never pass a zero size.
        unsafe { System.alloc(l) }
    }
    unsafe fn free(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller passes a block from `alloc` above (System) with
        // the same layout, as `free`'s contract says.
        unsafe { System.dealloc(p, l) }
    }
}

/// A test-and-test-and-set spinlock for talc's `lock_api` interface.
pub struct RawSpin(AtomicBool);

// SAFETY: a plain mutual-exclusion spinlock.
unsafe impl talc::lock_api::RawMutex for RawSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawSpin(AtomicBool::new(false));
    type GuardMarker = talc::lock_api::GuardSend;
    fn lock(&self) {
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.0.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
    }
    fn try_lock(&self) -> bool {
        self.0
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
    unsafe fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// talc 5 (`TalcLock` over a claimed arena).
pub struct Talc(talc::TalcLock<RawSpin, talc::source::Claim>);

impl Talc {
    pub fn new() -> Self {
        // SAFETY: a fresh arena of PEER_ARENA bytes, never freed.
        let claim = unsafe { talc::source::Claim::new(arena(PEER_ARENA), PEER_ARENA) };
        Self(talc::TalcLock::new(claim))
    }
}

impl Default for Talc {
    fn default() -> Self {
        Self::new()
    }
}

impl BenchAlloc for Talc {
    fn name(&self) -> &'static str {
        "talc"
    }
    fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: non-zero layout.
        unsafe { self.0.alloc(l) }
    }
    unsafe fn free(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller passes a block from `alloc` above (this
        // allocator) with the same layout, as `free`'s contract says.
        unsafe { self.0.dealloc(p, l) }
    }
}

/// talc 5's heap behind a `spin::Mutex`: the usual way a hobby kernel
/// shares one heap between CPUs (the multi-thread comparison).
pub struct TalcSpin(spin::Mutex<talc::base::Talc<talc::source::Claim, talc::DefaultBinning>>);

impl TalcSpin {
    pub fn new() -> Self {
        // SAFETY: a fresh arena of PEER_ARENA bytes, never freed.
        let claim = unsafe { talc::source::Claim::new(arena(PEER_ARENA), PEER_ARENA) };
        Self(spin::Mutex::new(talc::base::Talc::new(claim)))
    }
}

impl Default for TalcSpin {
    fn default() -> Self {
        Self::new()
    }
}

impl BenchAlloc for TalcSpin {
    fn name(&self) -> &'static str {
        "talc behind spin::Mutex"
    }
    fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: non-zero layout.
        unsafe { self.0.lock().allocate(l) }.map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }
    unsafe fn free(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller passes a block from `alloc` above (this heap)
        // with the same layout.
        unsafe { self.0.lock().deallocate(p, l) }
    }
}

/// linked_list_allocator 0.10 (`LockedHeap`).
pub struct LinkedList(linked_list_allocator::LockedHeap);

impl LinkedList {
    pub fn new() -> Self {
        // SAFETY: a fresh arena, never freed.
        Self(unsafe { linked_list_allocator::LockedHeap::new(arena(PEER_ARENA), PEER_ARENA) })
    }
}

impl Default for LinkedList {
    fn default() -> Self {
        Self::new()
    }
}

impl BenchAlloc for LinkedList {
    fn name(&self) -> &'static str {
        "linked_list_allocator"
    }
    fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: non-zero layout.
        unsafe { self.0.alloc(l) }
    }
    unsafe fn free(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller passes a block from `alloc` above (this
        // allocator) with the same layout, as `free`'s contract says.
        unsafe { self.0.dealloc(p, l) }
    }
}

/// buddy_system_allocator 0.13 (`LockedHeap<32>`).
pub struct Buddy(buddy_system_allocator::LockedHeap<32>);

impl Buddy {
    pub fn new() -> Self {
        let h = buddy_system_allocator::LockedHeap::<32>::new();
        // SAFETY: a fresh arena, never freed.
        unsafe { h.lock().init(arena(PEER_ARENA) as usize, PEER_ARENA) };
        Self(h)
    }
}

impl Default for Buddy {
    fn default() -> Self {
        Self::new()
    }
}

impl BenchAlloc for Buddy {
    fn name(&self) -> &'static str {
        "buddy_system_allocator"
    }
    fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: non-zero layout.
        unsafe { self.0.alloc(l) }
    }
    unsafe fn free(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller passes a block from `alloc` above (this
        // allocator) with the same layout, as `free`'s contract says.
        unsafe { self.0.dealloc(p, l) }
    }
}

// ---------------------------------------------------------------------------
// Workloads

/// A small deterministic generator (xorshift64*), so every allocator sees
/// the same sequence.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

fn touch(p: *mut u8) {
    assert!(!p.is_null(), "allocation failed during a benchmark");
    // SAFETY: a fresh allocation of at least one byte.
    unsafe { p.write_volatile(1) };
}

/// Hot path: allocate and free one `size`-byte object, `iters` times.
pub fn hot(a: &dyn BenchAlloc, size: usize, iters: u64) {
    let l = Layout::from_size_align(size, 8).unwrap();
    for _ in 0..iters {
        let p = a.alloc(l);
        touch(p);
        // SAFETY: just allocated with `l`.
        unsafe { a.free(p, l) };
    }
}

/// A set of live objects for the churn workloads.
pub struct Live {
    objs: Vec<(*mut u8, Layout)>,
    rng: Rng,
    sizes: fn(&mut Rng) -> Layout,
}

/// Small objects: 16..=256 bytes, 8-aligned.
pub fn small_size(r: &mut Rng) -> Layout {
    Layout::from_size_align(16 + r.below(241), 8).unwrap()
}

/// Mixed sizes 8..=4096, log-uniform, 8-aligned.
pub fn mixed_size(r: &mut Rng) -> Layout {
    let shift = 3 + r.below(10); // 8 .. 4096
    let lo = 1usize << shift;
    let size = (lo + r.below(lo + 1)).min(4096);
    Layout::from_size_align(size, 8).unwrap()
}

impl Live {
    /// Fills `a` with `n` live objects drawn from `sizes`.
    pub fn fill(a: &dyn BenchAlloc, n: usize, sizes: fn(&mut Rng) -> Layout, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let objs = (0..n)
            .map(|_| {
                let l = sizes(&mut rng);
                let p = a.alloc(l);
                touch(p);
                (p, l)
            })
            .collect();
        Self { objs, rng, sizes }
    }

    /// `iters` rounds of: free a random live object, allocate a new one.
    pub fn churn(&mut self, a: &dyn BenchAlloc, iters: u64) {
        for _ in 0..iters {
            let i = self.rng.below(self.objs.len());
            let (p, l) = self.objs[i];
            // SAFETY: live, allocated with `l`.
            unsafe { a.free(p, l) };
            let l = (self.sizes)(&mut self.rng);
            let p = a.alloc(l);
            touch(p);
            self.objs[i] = (p, l);
        }
    }

    /// Frees everything.
    pub fn drain(self, a: &dyn BenchAlloc) {
        for (p, l) in self.objs {
            // SAFETY: live, allocated with `l`.
            unsafe { a.free(p, l) };
        }
    }
}

/// Page-sized (order 0) or order-3 blocks: allocate `batch` blocks of
/// `4096 << order` bytes (page aligned), then free them, `rounds` times.
/// Returns the number of alloc+free pairs.
pub fn blocks(a: &dyn BenchAlloc, order: u32, batch: usize, rounds: u64) -> u64 {
    let l = Layout::from_size_align(4096 << order, 4096).unwrap();
    let mut v = Vec::with_capacity(batch);
    for _ in 0..rounds {
        for _ in 0..batch {
            let p = a.alloc(l);
            touch(p);
            v.push(p);
        }
        for p in v.drain(..) {
            // SAFETY: allocated above with `l`.
            unsafe { a.free(p, l) };
        }
    }
    rounds * batch as u64
}

/// CPU time the calling thread has used, in nanoseconds (wall time where
/// the OS has no per-thread clock). On a shared, loaded machine the
/// thread's own CPU time leaves out the time other processes had the core,
/// which wall time counts.
pub fn thread_cpu_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a valid out-pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
    }
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// One multi-thread measurement (see [`threaded_hot`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Throughput {
    /// Operations of all threads per second of wall time.
    pub wall_ops_per_s: f64,
    /// The sum over threads of operations per second of the thread's own
    /// CPU time: what the threads would do with a core each. Contention
    /// (spinning for a lock, cache lines moving between cores) costs CPU
    /// time, so it shows here, as long as the threads ran at the same time.
    pub cpu_ops_per_s: f64,
    /// CPU time of all threads over wall time: how many of them ran at
    /// once on average (near `threads` on an idle machine).
    pub parallelism: f64,
}

/// Alloc+free throughput with `threads` threads at once, each running
/// [`hot`] on `size` bytes for `ops_per_thread` operations, best of `rounds`
/// (by CPU-time throughput). Every thread is a CPU of its own for kreclaim
/// (see the crate docs).
pub fn threaded_hot(
    a: &(dyn BenchAlloc + Sync),
    size: usize,
    threads: usize,
    ops_per_thread: u64,
    rounds: usize,
) -> Throughput {
    (0..rounds)
        .map(|_| {
            let go = std::sync::Barrier::new(threads + 1);
            let (wall, cpus) = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            hot(a, size, 1000); // warm this thread's CPU state
                            go.wait();
                            let c = thread_cpu_ns();
                            hot(a, size, ops_per_thread);
                            (thread_cpu_ns() - c).max(1)
                        })
                    })
                    .collect();
                go.wait();
                let t = std::time::Instant::now();
                let cpus: Vec<u64> = hs
                    .into_iter()
                    .map(|h| h.join().expect("bench thread panicked"))
                    .collect();
                (t.elapsed(), cpus)
            });
            let ops = ops_per_thread as f64;
            Throughput {
                wall_ops_per_s: threads as f64 * ops / wall.as_secs_f64(),
                cpu_ops_per_s: cpus.iter().map(|&c| ops * 1e9 / c as f64).sum(),
                parallelism: cpus.iter().sum::<u64>() as f64 / wall.as_nanos() as f64,
            }
        })
        .fold(Throughput::default(), |best, t| {
            if t.cpu_ops_per_s > best.cpu_ops_per_s {
                t
            } else {
                best
            }
        })
}
