//! The `kmem_cache` itself: layout, slab lists, alloc and free.

use super::debug::{self, SlabBug};
use crate::mm::gfp::Gfp;
use crate::mm::inline_name::InlineName;
use crate::mm::page_alloc::{self, AllocError, PageOwner, PhysAddr};
use crate::sync::SpinLock;
use alloc::string::String;
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

bitflags::bitflags! {
    /// Cache flags with Linux's values (`include/linux/slab.h`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct SlabFlags: u32 {
        /// `F`: check every free (pointer, cache, offset).
        const CONSISTENCY_CHECKS = 0x100;
        /// `Z`: red zones before and after each object.
        const RED_ZONE = 0x400;
        /// `P`: poison free objects, check on allocation.
        const POISON = 0x800;
        /// A kmalloc cache.
        const KMALLOC = 0x1000;
        /// Align objects on cache lines.
        const HWCACHE_ALIGN = 0x2000;
        /// Pages count as reclaimable (for caches with a shrinker).
        const RECLAIM_ACCOUNT = 0x20000;
        /// No cache merging (kreclaim never merges caches; accepted).
        const NO_MERGE = 0x0100_0000;
        /// Memcg accounting (no memcg here; ignored).
        const ACCOUNT = 0x0400_0000;
    }
}

impl SlabFlags {
    /// All debug checks: `F`, `Z` and `P` (Linux's `slab_debug=FZP`).
    pub const DEBUG: SlabFlags = SlabFlags::CONSISTENCY_CHECKS
        .union(SlabFlags::RED_ZONE)
        .union(SlabFlags::POISON);
}

const PAGE: usize = 4096;
const HEADER_SIZE: usize = 128;
const MAX_OBJECTS: usize = 512;
const SLAB_MAGIC: u32 = 0x51ab_cafe;
const CACHE_LINE: usize = 64;
/// The least `min_partial` of a cache (Linux's `MIN_PARTIAL`): a node keeps
/// an empty slab only while it holds fewer partial slabs (empty ones
/// included) than its cache's `min_partial`.
pub const MIN_PARTIAL: usize = 5;
/// The most `min_partial` of a cache (Linux's `MAX_PARTIAL`).
pub const MAX_PARTIAL: usize = 10;

/// Linux's `set_min_partial(s, ilog2(s->size) / 2)`: caches of larger
/// objects keep more partial slabs, within [`MIN_PARTIAL`, `MAX_PARTIAL`].
fn min_partial_for(size: usize) -> usize {
    (size.max(1).ilog2() as usize / 2).clamp(MIN_PARTIAL, MAX_PARTIAL)
}

/// Where a slab sits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum ListKind {
    Partial = 0,
    Full = 1,
    Empty = 2,
    None = 3,
}

/// Metadata at the start of every slab.
#[repr(C, align(64))]
pub(crate) struct SlabHeader {
    magic: u32,
    objects: u16,
    /// Objects off the slab's free list: handed out, or cached in a sheaf.
    inuse: u16,
    pub(crate) cache: *const CacheInner,
    /// The first free object (0 = none): a plain address, as Linux's
    /// `slab->freelist`; the free pointers inside free objects are encoded.
    freelist: usize,
    next: *mut SlabHeader,
    prev: *mut SlabHeader,
    list: ListKind,
    order: u8,
    /// Bit i set = object i is off the free list (handed out, or in a
    /// sheaf). Changed only under the list lock; the free fast path reads it
    /// without (a clear bit there is a double free), hence atomics, used
    /// with plain loads and stores only.
    allocated: [AtomicU64; MAX_OBJECTS / 64],
}

const _: () = assert!(core::mem::size_of::<SlabHeader>() <= HEADER_SIZE);

#[derive(Clone, Copy)]
struct ListHead {
    head: *mut SlabHeader,
    len: usize,
}

impl ListHead {
    const EMPTY: ListHead = ListHead {
        head: ptr::null_mut(),
        len: 0,
    };
}

/// The node's state behind its list lock (Linux's `kmem_cache_node`, with
/// its `node_barn`): the slab lists and the barn of sheaves.
struct Lists {
    partial: ListHead,
    full: ListHead,
    empty: ListHead,
    /// Objects off the slabs' free lists (handed out or in sheaves).
    active_objs: usize,
    /// The barn's full sheaves, chained through [`Sheaf::next`].
    barn_full: *mut Sheaf,
    nr_full: usize,
    /// The barn's empty sheaves.
    barn_empty: *mut Sheaf,
    nr_empty: usize,
    /// Objects in the barn's full sheaves.
    barn_objs: usize,
}

// SAFETY: the raw slab and sheaf pointers are only followed under the list lock.
unsafe impl Send for Lists {}

/// A cache's immutable layout and its locked lists.
pub(crate) struct CacheInner {
    pub(crate) name: String,
    /// The name as given (a `&'static str`): page-owner records keep it.
    static_name: &'static str,
    pub(crate) object_size: usize,
    /// Bytes per object including red zone and free pointer, aligned.
    pub(crate) size: usize,
    pub(crate) flags: SlabFlags,
    ctor: Option<fn(*mut u8)>,
    order: u32,
    objects: usize,
    /// Offset of the first object from the slab's start: past the header
    /// and the first slot's left red zone.
    first_offset: usize,
    /// Offset of the free pointer from the object's start (Linux's
    /// `s->offset`): the middle of the object, or after it (see `create_with`).
    pub(crate) freeptr_offset: usize,
    /// Red zone [object_size, object_size + rz_len).
    pub(crate) rz_len: usize,
    /// Left red zone `[-red_left_pad, 0)` before each object (Linux's
    /// `s->red_left_pad`: a word, rounded up to the alignment); 0 without
    /// `RED_ZONE`.
    pub(crate) red_left_pad: usize,
    /// Where a kmalloc cache with red zones keeps the size each object was
    /// asked for (SLUB's `orig_size`), so that the slack between it and
    /// `object_size` is red-zoned too; 0 if the cache does not.
    orig_size_offset: usize,
    /// `ceil(2^32 / size)`: object index by multiplication (SLUB's
    /// `reciprocal_divide`), exact for offsets inside a slab.
    size_recip: u64,
    /// `objects * size`: the bytes the object slots span (the free fast
    /// path's range check, without a multiplication).
    span: usize,
    /// `ceil(2^64 / size)`: an offset `rel` below 2^32 is a multiple of
    /// `size` exactly when `rel * div_magic mod 2^64 < div_magic` (Lemire,
    /// Kaser and Kurz's divisibility test): the free fast path's boundary
    /// check with one multiplication.
    div_magic: u64,
    /// What the low bits of every slab page's private word hold for this
    /// cache: [`SLAB_PRIVATE_TAG`] and the cache's registry slot (Linux finds
    /// `slab->slab_cache` from `struct page` alone; see [`kfree_slab`]).
    /// Set once at registration, before any slab exists.
    slab_tag: usize,
    /// `slab_tag - first_offset` (wrapping): a slab page's private word
    /// minus this is the slab's first object (kfree's offset without a
    /// mask).
    private_bias: usize,
    /// Partial slabs (empty ones included) the node keeps before an empty
    /// slab goes back to the page allocator (Linux's `s->min_partial`).
    min_partial: usize,
    cookie: usize,
    lists: SpinLock<Lists>,
    /// Objects per sheaf (Linux's `sheaf_capacity`); 0 for debug caches,
    /// which bypass sheaves so that every free is checked under the lock.
    sheaf_capacity: usize,
    /// Each CPU's sheaves, indexed by CPU id.
    cpu: [CpuSheaves; MAX_CPUS],
    /// `Lists::nr_full`, readable without the list lock (set under it).
    barn_full_hint: AtomicUsize,
    /// Drains in progress from [`flush_all_sheaves`], which pins a cache
    /// under the registry lock and drains it after dropping that lock (a
    /// drain may wait for a sheaf lock); destroy, after unregistering the
    /// cache, waits until none is left before it frees the sheaves.
    pins: AtomicUsize,
    slabs_created: AtomicU64,
    slabs_freed: AtomicU64,
}

/// CPUs (ids `0..MAX_CPUS`) for which a cache keeps sheaves; a CPU with a
/// higher id allocates and frees through the slabs directly.
pub const MAX_CPUS: usize = 16;
const _: () = assert!(MAX_CPUS.is_power_of_two() && MAX_CPUS >= crate::platform::NR_CPUS);
// The fast paths index `CacheInner::cpu` by `platform::cpu_line_offset_fast`.
const _: () = assert!(core::mem::size_of::<CpuSheaves>() == crate::platform::CPU_LINE);
const _: () = assert!(core::mem::align_of::<CpuSheaves>() >= crate::platform::PREFETCH_PAIR);
/// Full sheaves a barn keeps (Linux: `MAX_FULL_SHEAVES`, 10; fewer here,
/// for machines of a few MiB). Beyond, a full sheaf goes back to the slabs.
pub const MAX_FULL_SHEAVES: usize = 4;
/// Empty sheaves a barn keeps (Linux: `MAX_EMPTY_SHEAVES`); beyond, they are
/// freed.
pub const MAX_EMPTY_SHEAVES: usize = 4;

/// An array of free objects of one cache (Linux 6.18's `slab_sheaf`):
/// `size` objects in the slots that follow the header, the newest last.
/// Allocated from kmalloc (its slabs directly, not through sheaves).
#[repr(C)]
struct Sheaf {
    /// The barn list a sheaf sits on (under the list lock).
    next: *mut Sheaf,
    /// Objects held. Changed by the owning CPU with interrupts masked, or
    /// under the list lock once in the barn; readers under the lock take a
    /// snapshot of other CPUs' sheaves (plain loads and stores).
    size: AtomicUsize,
}

/// Bytes of every sheaf: the header and up to 30 object slots.
const SHEAF_BYTES: usize = 256;

/// The cache sheaves come from: `slab_sheaf` in slabinfo, its active
/// objects the sheaves in use. It has no sheaves of its own.
static SHEAF_CACHE: spin::Once<KmemCache> = spin::Once::new();

/// Creates the `slab_sheaf` cache (at kmalloc's initialisation); until
/// then, and if it cannot be created, caches work without sheaves. The
/// error names the cache; a later call tries again.
pub(crate) fn sheaf_cache_init() -> Result<(), CreateError> {
    SHEAF_CACHE
        .try_call_once(|| {
            KmemCache::create_with(
                "slab_sheaf",
                SHEAF_BYTES,
                64,
                SlabFlags::empty(),
                None,
                false,
            )
        })
        .map(|_| ())
}

/// Pages held by the `slab_sheaf` cache's slabs: memory the sheaves cost.
/// Allocates nothing, so tests can subtract it between page counts.
pub fn sheaf_pages() -> usize {
    SHEAF_CACHE.get().map_or(0, |c| {
        let i = c.inner().counts();
        i.num_slabs * i.pagesperslab
    })
}

/// Words of a sheaf's header, before its object slots.
const SHEAF_HEADER_WORDS: usize = 2;
/// Words of a sheaf, header included (a power of two).
const SHEAF_WORDS: usize = SHEAF_BYTES / 8;
const _: () = assert!(SHEAF_WORDS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<Sheaf>() == SHEAF_HEADER_WORDS * 8);

impl Sheaf {
    /// Slot `i` of sheaf `sh`.
    ///
    /// # Safety
    /// `sh` is a live sheaf and `i` below its cache's sheaf capacity.
    #[inline(always)]
    unsafe fn slot(sh: *mut Sheaf, i: usize) -> *mut usize {
        // SAFETY: the caller's contract: the slots follow the header.
        unsafe { (sh as *mut usize).add(SHEAF_HEADER_WORDS + i) }
    }

    /// Word `k` of sheaf `sh` (1: the size; `SHEAF_HEADER_WORDS + i`: slot
    /// `i`), without the dev build's alignment check and bounds check
    /// (`AtomicUsize::from_ptr` on a wrapped offset).
    ///
    /// # Safety
    /// `sh` is a live sheaf (the caller holds the sheaf lock of the CPU that
    /// has it, or the list lock while it is in the barn) and
    /// `k < SHEAF_WORDS`.
    #[inline(always)]
    unsafe fn word<'a>(sh: *mut Sheaf, k: usize) -> &'a AtomicUsize {
        // SAFETY: the caller's contract: a word inside the live sheaf,
        // 8-aligned as the sheaf is.
        unsafe { AtomicUsize::from_ptr((sh as *mut usize).wrapping_add(k)) }
    }

    /// Objects in `sh` (0 for none).
    #[inline(always)]
    fn len(sh: *mut Sheaf) -> usize {
        if sh.is_null() {
            return 0;
        }
        // SAFETY: a non-null sheaf pointer read from a CPU slot or the barn
        // stays valid while the caller holds the list lock or runs on the
        // owning CPU with interrupts masked (sheaves leave a CPU only under
        // the list lock and are freed only after).
        unsafe { (*sh).size.load(Ordering::Relaxed) }
    }
}

/// One CPU's sheaves of a cache (Linux's `slub_percpu_sheaves`): `main`
/// serves allocations and takes frees, `spare` is swapped in when main runs
/// empty (or full).
///
/// They are guarded by `locked`, Linux's `local_trylock_t`: whoever changes
/// them holds it, taken only with a try, never waited for. An interrupt
/// handler (or a task that preempted the holder) that finds it held takes
/// the slow path, which then goes to the slabs under the list lock; so
/// interrupts stay enabled on the fast path. How `locked` is taken depends
/// on the platform ([`SheafMode`]): on the kernel's own platform by a plain
/// load and store with the task pinned by its preempt count (Linux's way),
/// on the host by its CPU's thread alone, elsewhere by an atomic exchange
/// (then the lock, not the CPU, gives the right: a holder that migrates
/// meanwhile still owns the sheaves). A context on another CPU (a drain)
/// takes the sheaves through `remote` where `locked` is plain
/// ([`CpuSheaves::lock_remote`]). A sheaf
/// leaves a CPU (to the barn, or to be freed) only under the list lock as
/// well, so readers that hold that (slabinfo) may follow the pointers.
/// Relaxed atomics for the pointers: plain loads and stores. A cache line
/// each ([`crate::platform::CPU_LINE`] bytes: a pair of lines, which x86
/// prefetches together), so that CPUs using their own sheaves never write a
/// shared line.
#[repr(C, align(128))]
struct CpuSheaves {
    main: SheafSlot,
    spare: SheafSlot,
    locked: AtomicBool,
    /// Where `locked` is a plain flag (the host's threads, the kernel's
    /// pinned fast paths): set by another context that takes these sheaves
    /// (a drain, `prefill`), which then holds them instead of `locked`
    /// ([`CpuSheaves::lock_remote`]).
    remote: AtomicBool,
}

/// Where the kernel's fast-path acquire ([`CacheInner::acquire_fast`])
/// finds the two flags in a [`CpuSheaves`].
#[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
const LOCKED_OFFSET: usize = core::mem::offset_of!(CpuSheaves, locked);
#[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
const REMOTE_OFFSET: usize = core::mem::offset_of!(CpuSheaves, remote);
// The kernel's fast path tests both flags with one 16-bit load at `locked`.
#[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
const _: () = assert!(REMOTE_OFFSET == LOCKED_OFFSET + 1);

/// The sheaves the kernel's fast-path acquire hands out when this CPU's
/// are taken (`locked` or `remote` set): no sheaf in either slot, so the
/// pop or push that follows fails its size test and goes to the slow
/// path, which sees the real flags; the fast path's release writes its
/// `locked` (nobody reads it). Shared by every cache and CPU.
#[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
static BUSY_SHEAVES: CpuSheaves = CpuSheaves {
    main: SheafSlot(AtomicPtr::new(
        &NO_SHEAF as *const NoSheaf as *mut NoSheaf as *mut Sheaf,
    )),
    spare: SheafSlot(AtomicPtr::new(
        &NO_SHEAF as *const NoSheaf as *mut NoSheaf as *mut Sheaf,
    )),
    locked: AtomicBool::new(false),
    remote: AtomicBool::new(false),
};

/// What a CPU's sheaf slot holds while the CPU has no sheaf there (Linux's
/// sheaves have a static empty one for the same reason): a sheaf header
/// whose size, `usize::MAX`, is above every capacity, so that the fast
/// paths' one size test (pop: `size - 1 < capacity`; push: `size <
/// capacity`) sends both to their slow paths without a test for "no
/// sheaf". Shared by every cache and CPU, never written: neither fast path
/// writes before its size test passes, and the slow paths never see it
/// ([`SheafSlot`] turns it into null).
#[repr(C, align(64))]
struct NoSheaf([AtomicUsize; SHEAF_HEADER_WORDS]);

// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
static NO_SHEAF: NoSheaf = NoSheaf([AtomicUsize::new(0), AtomicUsize::new(usize::MAX)]);

/// The address of [`NO_SHEAF`] as a sheaf pointer.
#[inline(always)]
fn no_sheaf() -> *mut Sheaf {
    &NO_SHEAF as *const NoSheaf as *mut Sheaf
}

/// A CPU's main or spare sheaf pointer. It holds [`NO_SHEAF`] instead of
/// null, which only the fast paths see ([`SheafSlot::raw`]); everything
/// else goes through `load`, `store` and `swap`, which speak of null for
/// "no sheaf" as before, so the sentinel is never taken for a sheaf of
/// objects.
struct SheafSlot(AtomicPtr<Sheaf>);

impl SheafSlot {
    fn new() -> SheafSlot {
        SheafSlot(AtomicPtr::new(no_sheaf()))
    }

    /// The sheaf, null for none.
    #[inline]
    fn load(&self, o: Ordering) -> *mut Sheaf {
        let sh = self.0.load(o);
        if sh == no_sheaf() {
            ptr::null_mut()
        } else {
            sh
        }
    }

    /// Installs `sh` (null: no sheaf).
    #[inline]
    fn store(&self, sh: *mut Sheaf, o: Ordering) {
        self.0.store(if sh.is_null() { no_sheaf() } else { sh }, o);
    }

    /// Installs `sh` (null: no sheaf) and returns the old sheaf (null for
    /// none).
    #[inline]
    fn swap(&self, sh: *mut Sheaf, o: Ordering) -> *mut Sheaf {
        let old = self.0.swap(if sh.is_null() { no_sheaf() } else { sh }, o);
        if old == no_sheaf() {
            ptr::null_mut()
        } else {
            old
        }
    }

    /// The slot as the fast paths read it: a sheaf, or [`NO_SHEAF`], whose
    /// size fails their size test. Never null.
    #[inline(always)]
    fn raw(&self) -> *mut Sheaf {
        self.0.load(Ordering::Relaxed)
    }
}

impl CpuSheaves {
    fn new() -> CpuSheaves {
        CpuSheaves {
            locked: AtomicBool::new(false),
            remote: AtomicBool::new(false),
            main: SheafSlot::new(),
            spare: SheafSlot::new(),
        }
    }

    /// Takes the sheaves' lock if it is free, with an atomic exchange (the
    /// [`SheafMode::Exchange`] platforms' only way, and their remote
    /// takers'): correct whichever CPU the caller runs on.
    #[inline(always)]
    fn trylock_exchange(&self) -> Option<SheafGuard<'_>> {
        if self.locked.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(SheafGuard {
            pcs: self,
            kind: GuardKind::Local,
        })
    }

    /// Takes CPU `cpu`'s sheaves (these) from a context that may run on
    /// another CPU than theirs (a drain, `prefill_sheaves`,
    /// `with_sheaves_held`), with a try. Where the owner takes `locked`
    /// with a plain load and store ([`SheafMode::Threads`],
    /// [`SheafMode::Pinned`]) an exchange on it would not exclude the owner
    /// (x86 lets the owner's store pass its later load: Dekker's protocol
    /// needs a full barrier on both sides). So this sets `remote` (an
    /// exchange, excluding other such takers), makes the owning CPU execute
    /// a full barrier, and only then looks at `locked`. On the host
    /// (`platform::membarrier`, every thread, at any point): with the
    /// owner's order (store `locked`, then load `remote`) one of the two
    /// always sees the other's flag. In the kernel
    /// (`platform::membarrier_cpu`: an IPI to that CPU, answered only while
    /// no task there is pinned, i.e. between two of its sections): a
    /// section that ended before the answer left `locked` as it found it,
    /// with its sheaf changes seen here, and one that starts after it sees
    /// `remote` in its first check. Either way the owner backs off to its
    /// slow path, or this finds `locked` set and lets go (the caller waits
    /// and tries again). `locked` is never written from afar. Elsewhere it
    /// is the exchange.
    fn lock_remote(&self, cpu: usize) -> Option<SheafGuard<'_>> {
        let mode = SheafMode::get();
        if mode == SheafMode::Exchange {
            return self.trylock_exchange();
        }
        if self.remote.swap(true, Ordering::Acquire) {
            return None;
        }
        let free = if mode == SheafMode::Pinned {
            crate::platform::membarrier_cpu(cpu) && !self.locked.load(Ordering::Acquire)
        } else {
            crate::platform::membarrier() && !self.locked.load(Ordering::Acquire)
        };
        if !free {
            self.remote.store(false, Ordering::Release);
            return None;
        }
        REMOTE_TAKES.fetch_add(1, Ordering::Relaxed);
        Some(SheafGuard {
            pcs: self,
            kind: GuardKind::Remote,
        })
    }

    /// Takes `locked` with a plain load and store, for the host's CPU
    /// threads ([`SheafMode::Threads`]), where only the CPU's own thread
    /// takes it plainly. Then loads `remote` and backs off if a remote
    /// taker announced itself ([`CpuSheaves::lock_remote`], whose
    /// process-wide barrier may come at any point of this thread, so the
    /// check must follow the store). Linux's `local_trylock` is such a
    /// plain flag under `preempt_disable`, with no remote taker (its drains
    /// run on the CPU).
    #[inline(always)]
    fn try_acquire_plain(&self) -> bool {
        if self.locked.load(Ordering::Relaxed) {
            return false;
        }
        self.locked.store(true, Ordering::Relaxed);
        // Store `locked`, then load `remote`: kept in this order by the
        // compiler here, and by the remote taker's barrier on the CPU.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        if self.remote.load(Ordering::Acquire) {
            self.locked.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Takes `locked` in [`SheafMode::Pinned`]: one test of both flags,
    /// then a plain store (the fast paths' asm stretch does the same). The
    /// caller is pinned to the CPU whose sheaves these are (its preempt
    /// count above 0) at least until the store. No
    /// second look at `remote` after the store: a remote taker's barrier
    /// is answered on this CPU only while no task is pinned
    /// (`arch::x86_64::smp::membarrier_ack_local`), so it never falls
    /// between this test and the store; an interrupt handler of this CPU
    /// that does takes and releases the flag itself before the store.
    #[inline(always)]
    fn try_acquire_pinned(&self) -> bool {
        // Both flags, one branch (`|` of two loads, not `||`).
        if self.locked.load(Ordering::Relaxed) | self.remote.load(Ordering::Acquire) {
            return false;
        }
        self.locked.store(true, Ordering::Relaxed);
        // The sheaf accesses stay after the store.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        true
    }

    /// Takes the sheaves' lock for the caller's own CPU's contexts: plain
    /// where [`SheafMode`] allows (the caller pinned to the CPU whose
    /// sheaves these are, in the kernel by its preempt count), else the
    /// exchange.
    #[inline(always)]
    fn try_acquire(&self) -> bool {
        match SheafMode::get() {
            SheafMode::Pinned => self.try_acquire_pinned(),
            SheafMode::Threads => self.try_acquire_plain(),
            SheafMode::Exchange => !self.locked.swap(true, Ordering::Acquire),
        }
    }

    /// Releases what [`CpuSheaves::try_acquire`] took.
    #[inline(always)]
    fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

/// How a CPU's sheaf lock (`CpuSheaves::locked`) is taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SheafMode {
    /// The kernel's own platform (`platform::kernel_gs_layout`): the CPU's
    /// contexts take it with a plain load and store, the task pinned by its
    /// preempt count (slow paths, `inc` of a `gs:` word) or by a pinned asm
    /// stretch (fast paths, [`CacheInner::acquire_fast`]); remote takers go
    /// through `remote` and an IPI barrier to the CPU.
    Pinned,
    /// The host build whose CPUs are threads (`platform::cpus_are_threads`):
    /// plain, by the CPU's own thread; remote takers through `remote` and
    /// the process-wide `membarrier`.
    Threads,
    /// Any other platform (an embedder's kernel): an atomic exchange, by
    /// anyone.
    Exchange,
}

impl SheafMode {
    #[inline(always)]
    fn get() -> SheafMode {
        if crate::platform::kernel_gs_layout() {
            SheafMode::Pinned
        } else if crate::platform::cpus_are_threads() {
            SheafMode::Threads
        } else {
            SheafMode::Exchange
        }
    }
}

/// Times a remote taker (drain, prefill, test hook) took a CPU's sheaves
/// through `remote` ([`CpuSheaves::lock_remote`]).
static REMOTE_TAKES: AtomicU64 = AtomicU64::new(0);

/// How many times a context took a CPU's sheaves through their `remote`
/// flag (a drain, `prefill_sheaves`, `with_sheaves_held`) rather than the
/// owner's `locked` flag: 0 on platforms whose sheaf lock is an exchange.
pub fn sheaf_remote_takes() -> u64 {
    REMOTE_TAKES.load(Ordering::Relaxed)
}

/// Whether CPU `cpu`'s `locked` flag of `cache` is set (held by that CPU's
/// own context, e.g. a fast path in progress): a test hook, for interrupt
/// handlers that check what they interrupted. `false` for a CPU without
/// sheaves entry.
pub fn sheaves_locked_by_owner(cache: &KmemCache, cpu: usize) -> bool {
    cache
        .inner()
        .cpu
        .get(cpu)
        .is_some_and(|pcs| pcs.locked.load(Ordering::Relaxed))
}

/// How long a drain waits for one CPU's sheaf lock before it gives up and
/// reports the CPU (a hang guard for misuse: a drain run by the lock's own
/// holder, e.g. from under [`with_sheaves_held`]; a fast path holds the lock
/// for a few instructions, a preempted holder until it runs again).
const DRAIN_PATIENCE_NS: u64 = 10_000_000_000;

/// Times a drain found a CPU's sheaf lock held and waited for it.
static DRAIN_WAITS: AtomicU64 = AtomicU64::new(0);
/// CPUs' sheaves a drain gave up on after [`DRAIN_PATIENCE_NS`] (each
/// reported with the cache's name and the CPU).
static DRAIN_GIVEUPS: AtomicU64 = AtomicU64::new(0);

/// How many times a drain (shrink, destroy, reclaim's flush, `info`,
/// `validate`) found another context holding a CPU's sheaf lock and waited
/// for it instead of skipping that CPU.
pub fn sheaf_drain_waits() -> u64 {
    DRAIN_WAITS.load(Ordering::Relaxed)
}

/// How many times a drain gave up on a CPU's sheaves (its lock stayed held
/// for 10 s); each was reported. 0 in a healthy kernel.
pub fn sheaf_drain_giveups() -> u64 {
    DRAIN_GIVEUPS.load(Ordering::Relaxed)
}

/// Whether a waiting drain may give the CPU away ([`crate::task::yield_now`])
/// so that a sheaf-lock holder preempted on this CPU gets to run: a task of
/// kreclaim's scheduler, interrupts on, preemptible. Otherwise it spins
/// (the host build's spin yields the thread now and then).
fn drain_may_yield() -> bool {
    crate::task::started()
        && crate::task::can_block_current()
        && !crate::platform::irqs_disabled()
        && crate::task::preempt_count() == 0
}

impl CpuSheaves {
    /// Takes the sheaves' lock for a drain, from any CPU (Linux's
    /// `flush_all` runs `flush_cpu_sheaves` on each CPU under its local
    /// lock and waits for it): if the lock is held (a fast or slow path on
    /// that CPU, maybe interrupted or preempted) it waits, yielding when
    /// it may, until the holder lets go. `None` only after
    /// [`DRAIN_PATIENCE_NS`] (reported by the caller).
    fn lock_for_drain(&self, cpu: usize) -> Option<SheafGuard<'_>> {
        if let Some(g) = self.lock_remote(cpu) {
            return Some(g);
        }
        DRAIN_WAITS.fetch_add(1, Ordering::Relaxed);
        let yield_ok = drain_may_yield();
        let start = crate::time::now_ns();
        let mut spins = 0u32;
        loop {
            if yield_ok {
                crate::task::yield_now();
            } else {
                crate::platform::spin_relax(&mut spins);
            }
            if !self.locked.load(Ordering::Relaxed)
                && let Some(g) = self.lock_remote(cpu)
            {
                return Some(g);
            }
            if crate::time::now_ns().saturating_sub(start) > DRAIN_PATIENCE_NS {
                DRAIN_GIVEUPS.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
}

/// A held [`CpuSheaves`] local lock; dropping it releases the lock.
struct SheafGuard<'a> {
    pcs: &'a CpuSheaves,
    kind: GuardKind,
}

/// What a [`SheafGuard`] holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GuardKind {
    /// `locked`, taken by the CPU's own context or by an exchange.
    Local,
    /// `locked`, taken plainly by a task pinned to the CPU
    /// ([`SheafMode::Pinned`]): the drop also ends the pinning.
    Pinned,
    /// `remote`, taken by [`CpuSheaves::lock_remote`] from afar.
    Remote,
}

impl Drop for SheafGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        match self.kind {
            GuardKind::Local => self.pcs.locked.store(false, Ordering::Release),
            GuardKind::Pinned => {
                self.pcs.locked.store(false, Ordering::Release);
                crate::task::preempt_enable();
            }
            GuardKind::Remote => self.pcs.remote.store(false, Ordering::Release),
        }
    }
}

/// The CPU whose sheaves the caller takes: the platform's CPU number (the
/// kernel reads it from its GS base inline; the host build runs each
/// thread as a CPU of its own). Read after the caller pinned itself where
/// the sheaf lock is plain ([`CacheInner::lock_this_cpu`]); with the
/// exchange a hint only (a caller that moves meanwhile is still correct).
#[inline(always)]
fn sheaf_cpu() -> usize {
    crate::platform::cpu_id()
}

/// Gives CPU `cpu` its sheaves of `cache` and fills its main sheaf from the
/// slabs to capacity (new slabs as needed), from whichever CPU calls it
/// (taking that CPU's sheaves as a remote taker does,
/// `CpuSheaves::lock_remote`, tried; `false` if they were held or no
/// sheaf or slab could be had). `bench=smp` does it for each AP before the APs
/// run their loops in their idle tasks (`call_on_ap`), so that an AP's
/// alternating alloc and free stay on the fast path, which takes no lock
/// that names a task (an idle task must never wait for one).
pub fn prefill_sheaves(cache: &KmemCache, cpu: usize) -> bool {
    let inner = cache.inner();
    let Some(pcs) = inner.cpu.get(cpu) else {
        return false;
    };
    if inner.sheaf_capacity == 0 {
        return false;
    }
    // The AP's allocations must find the fast path on (it is turned on by
    // an allocation slow path, which an AP must not take).
    refresh_alloc_fast();
    let mut fresh = FreshSheaves::NONE;
    let ok = loop {
        let Some(g) = pcs.lock_remote(cpu) else {
            break false;
        };
        match inner.install_sheaves(pcs, g, &mut fresh) {
            Install::Ready(g) => {
                let main = pcs.main.load(Ordering::Relaxed);
                let mut l = inner.lists.lock();
                let mut bad = BadFreeptr::NONE;
                let got = inner.refill_locked(&mut l, main, &mut bad);
                let full = Sheaf::len(main) == inner.sheaf_capacity;
                drop(l);
                drop(g);
                bad.report(inner);
                if full {
                    break true;
                }
                // The slabs ran out part way (or had nothing): a new slab,
                // and fill on, so that the sheaf is full.
                if got == 0 && inner.new_slab(crate::mm::gfp::GFP_KERNEL).is_err() {
                    break false;
                }
            }
            Install::Retry => {}
            Install::NoSheaves => break false,
        }
    };
    fresh.free();
    ok
}

/// Test hook: holds CPU `cpu`'s sheaves of `cache` while `f` runs, taken
/// as a remote taker takes them (`CpuSheaves::lock_remote`; on the
/// kernel's and the host's platforms through their `remote` flag, which
/// the owner's fast path tests as it tests its own), so that a test can
/// check that allocations and frees meanwhile take the slow path and
/// corrupt nothing. `None` if they were not free (or `cpu` has no
/// sheaves).
pub fn with_sheaves_held<R>(cache: &KmemCache, cpu: usize, f: impl FnOnce() -> R) -> Option<R> {
    let g = cache.inner().cpu.get(cpu)?.lock_remote(cpu)?;
    let r = f();
    drop(g);
    Some(r)
}

/// Test hook: takes this CPU's sheaf flag of `cache` the way its own
/// fast path does (the owner's `locked`, in the kernel a plain store made
/// while pinned) and, holding it, lets the task be preempted and moved
/// again, as a fast path past its pinned stretch may be; runs `f` with the
/// CPU's number, then releases the flag (from wherever the task runs by
/// then). A drain meanwhile must wait for it, not take the sheaves from
/// afar. `None` if the flag was not free (or the cache has no sheaves).
pub fn with_own_sheaves_held<R>(cache: &KmemCache, f: impl FnOnce(usize) -> R) -> Option<R> {
    let inner = cache.inner();
    let (pcs, mut g) = inner.lock_this_cpu()?;
    let cpu = (pcs as *const CpuSheaves as usize - inner.cpu.as_ptr() as usize)
        / core::mem::size_of::<CpuSheaves>();
    if g.kind == GuardKind::Pinned {
        g.kind = GuardKind::Local;
        crate::task::preempt_enable();
    }
    let r = f(cpu);
    drop(g);
    Some(r)
}

/// Objects per sheaf by object size (SLAB's `enable_cpucache` table, scaled
/// down; a 30-slot sheaf is a kmalloc-256 object); 0 (no sheaves) for debug
/// caches, as in Linux: their frees are checked one by one under the lock.
fn sheaf_capacity_for(size: usize, flags: SlabFlags) -> usize {
    if flags.intersects(SlabFlags::DEBUG) {
        return 0;
    }
    match size {
        0..=256 => 30,
        257..=1024 => 14,
        1025..=4096 => 6,
        _ => 2,
    }
}

/// Slabs to give back after a flush, once the list lock is dropped: unlinked
/// slabs chained through their `next` field.
struct Discards {
    head: *mut SlabHeader,
}

impl Discards {
    const NONE: Discards = Discards {
        head: ptr::null_mut(),
    };

    fn add(&mut self, s: *mut SlabHeader) {
        // SAFETY: an unlinked slab of ours.
        unsafe { (*s).next = self.head };
        self.head = s;
    }
}

/// Double frees found while flushing a sheaf under the list lock (an object
/// whose slab already has it free), reported once the lock is dropped: a
/// report allocates.
struct DoubleFrees {
    addrs: [usize; 4],
    n: usize,
}

impl DoubleFrees {
    const NONE: DoubleFrees = DoubleFrees {
        addrs: [0; 4],
        n: 0,
    };

    fn note(&mut self, addr: usize) {
        if let Some(a) = self.addrs.get_mut(self.n) {
            *a = addr;
        }
        self.n += 1;
    }

    #[track_caller]
    fn report(self, c: &CacheInner) {
        for &addr in &self.addrs[..self.n.min(self.addrs.len())] {
            debug::report(
                c,
                SlabBug::DoubleFree,
                addr,
                None,
                format_args!("Object already free (found in a sheaf)"),
            );
        }
        if self.n > self.addrs.len() {
            crate::println!(
                "BUG {}: {} more double frees found in a sheaf",
                c.name,
                self.n - self.addrs.len()
            );
        }
    }
}

/// Free objects whose free pointer was found corrupt under the list lock
/// (the decoded pointer is not a free object of their slab), reported once
/// the lock is dropped: a report allocates.
struct BadFreeptr {
    addr: usize,
    n: usize,
}

impl BadFreeptr {
    const NONE: BadFreeptr = BadFreeptr { addr: 0, n: 0 };

    fn note(&mut self, addr: usize) {
        if self.n == 0 {
            self.addr = addr;
        }
        self.n += 1;
    }

    /// Linux's `object_err(s, slab, object, "Freepointer corrupt")`.
    #[track_caller]
    fn report(self, c: &CacheInner) {
        if self.n == 0 {
            return;
        }
        debug::report(
            c,
            SlabBug::FreePointerCorrupt,
            self.addr,
            Some(c.freeptr_offset),
            format_args!("Freepointer corrupt"),
        );
        crate::println!(
            "FIX {}: Marking all objects used (the rest of the slab's free list is abandoned)",
            c.name
        );
    }
}

/// Sheaves a slow path allocated (with interrupts enabled) and has not yet
/// given to a CPU or the barn; freed when the slow path ends unused.
struct FreshSheaves {
    sheaves: [*mut Sheaf; 2],
    /// Allocation was tried (it is, once per slow path).
    tried: bool,
}

impl FreshSheaves {
    const NONE: FreshSheaves = FreshSheaves {
        sheaves: [ptr::null_mut(); 2],
        tried: false,
    };

    fn take(&mut self) -> Option<*mut Sheaf> {
        self.sheaves
            .iter_mut()
            .find(|s| !s.is_null())
            .map(|s| core::mem::replace(s, ptr::null_mut()))
    }

    fn free(self) {
        for sh in self.sheaves {
            CacheInner::free_sheaf(sh);
        }
    }
}

/// What [`CacheInner::install_sheaves`] found.
enum Install<'a> {
    /// The CPU has a main and a spare sheaf; its sheaf lock still held.
    Ready(SheafGuard<'a>),
    /// Sheaves were allocated with interrupts enabled: start over.
    Retry,
    /// No sheaves could be had: use the slabs directly.
    NoSheaves,
}

/// Why a cache could not be created. Every variant names the cache; the
/// name is kept inline ([`InlineName`]) so reporting a failure allocates
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// Size 0 or too large for a slab (use the page allocator).
    BadSize {
        /// The cache's name.
        name: InlineName,
        /// The requested object size, in bytes.
        size: usize,
    },
    /// Alignment not a power of two or larger than a page.
    BadAlign {
        /// The cache's name.
        name: InlineName,
        /// The requested alignment, in bytes.
        align: usize,
    },
    /// Every one of the registry's `max` slots holds a live cache: destroy
    /// one first. Not a lack of memory; retrying after reclaim won't help.
    RegistryFull {
        /// The cache's name.
        name: InlineName,
        /// Slots in the registry.
        max: usize,
    },
    /// The cache's descriptor or name could not be allocated.
    NoMemory {
        /// The cache's name.
        name: InlineName,
    },
}

impl CreateError {
    /// The cache that could not be created.
    pub fn name(&self) -> &InlineName {
        match self {
            Self::BadSize { name, .. }
            | Self::BadAlign { name, .. }
            | Self::RegistryFull { name, .. }
            | Self::NoMemory { name } => name,
        }
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize { name, size } => {
                write!(f, "kmem_cache_create({name}): bad object size {size}")
            }
            Self::BadAlign { name, align } => {
                write!(f, "kmem_cache_create({name}): bad alignment {align}")
            }
            Self::RegistryFull { name, max } => write!(
                f,
                "kmem_cache_create({name}): cache registry full ({max} caches live)"
            ),
            Self::NoMemory { name } => write!(f, "kmem_cache_create({name}): out of memory"),
        }
    }
}

/// Why a cache could not be destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestroyError {
    /// Objects are still allocated; the cache is kept (leaked) for them.
    LiveObjects {
        /// The cache's name.
        cache: String,
        /// Objects still allocated.
        count: usize,
    },
}

impl fmt::Display for DestroyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LiveObjects { cache, count } => write!(
                f,
                "kmem_cache_destroy {cache}: Slab cache still has objects: {count} objects remaining"
            ),
        }
    }
}

/// A slab cache. Dropping it destroys it (reporting live objects).
pub struct KmemCache {
    inner: NonNull<CacheInner>,
}

// SAFETY: CacheInner is shared through its lock and atomics.
unsafe impl Send for KmemCache {}
// SAFETY: all shared state of CacheInner is behind its list lock, per-CPU arrays (used with
// interrupts masked) and atomics, so `&KmemCache` may be used from any task.
unsafe impl Sync for KmemCache {}

/// Every live cache, for slabinfo and OOM reports.
const MAX_CACHES: usize = 256;
struct Registry([*const CacheInner; MAX_CACHES]);
// SAFETY: entries are only followed under the lock while the cache lives.
unsafe impl Send for Registry {}

/// The registry's slots readable without its lock: `kfree` finds an
/// object's cache from the slot number in its slab page's private word. A
/// slot is set before the cache's first slab exists and cleared when the
/// cache is destroyed, after which its slabs are gone (or, with objects
/// left, the cache is never freed).
static CACHE_BY_ID: [AtomicPtr<CacheInner>; MAX_CACHES] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CACHES];

/// Marks a slab page's private word: `slab base | SLAB_PRIVATE_TAG | slot`
/// (slab bases are page aligned; the slot is below [`MAX_CACHES`]). Other
/// private words (0, kmalloc's large-allocation tags) never have this bit.
const SLAB_PRIVATE_TAG: usize = 0x800;
/// The low bits of a private word: the tag and the cache's slot.
const SLAB_PRIVATE_LOW: usize = PAGE - 1;
const _: () = assert!(MAX_CACHES <= SLAB_PRIVATE_TAG);
static CACHES: SpinLock<Registry> = SpinLock::new(
    Registry([ptr::null(); MAX_CACHES]),
    crate::lock_class!("slab_caches"),
);

/// The lockdep class of every cache's list lock (one initialisation site).
static LIST_LOCK_CLASS: crate::sync::lockdep::LockClassKey =
    crate::sync::lockdep::LockClassKey::new("kmem_cache_node->list_lock");

/// The lockdep class shared by the caches' list locks, for tests that
/// provoke a lockdep report while a cache takes its list lock.
pub fn list_lock_class() -> &'static crate::sync::lockdep::LockClassKey {
    &LIST_LOCK_CLASS
}

/// Whether every slab so far sits at a virtual address aligned to its size
/// (then a free object's slab is its address masked); cleared for good by
/// the first slab that does not.
static SLABS_ALIGNED: AtomicBool = AtomicBool::new(true);

static COOKIE_SEED: AtomicUsize = AtomicUsize::new(0x9e37_79b9_7f4a_7c15);

fn random_cookie() -> usize {
    // splitmix64 over a counter mixed with the cycle counter.
    let mut z = COOKIE_SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ crate::time::cycles() as usize;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// Global debug flags from `slab_debug=` (applied to caches created later),
/// optionally restricted to one cache name.
static GLOBAL_DEBUG: SpinLock<(SlabFlags, Option<String>)> =
    SpinLock::new((SlabFlags::empty(), None), crate::lock_class!("slab_debug"));

/// A `slab_debug=` value kreclaim cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSlabDebug;

/// Parses Linux's `slab_debug=` value: letters F, Z, P (and U, T, A, O,
/// accepted and ignored: kreclaim does not implement them), `-` for none,
/// an empty value for all, optionally `,cachename`.
pub fn slab_debug_parse(v: &str) -> Result<(SlabFlags, Option<&str>), BadSlabDebug> {
    let (letters, cache) = match v.split_once(',') {
        Some((l, c)) if !c.is_empty() => (l, Some(c)),
        Some((l, _)) => (l, None),
        None => (v, None),
    };
    let mut f = SlabFlags::empty();
    if letters.is_empty() {
        f = SlabFlags::DEBUG;
    }
    for c in letters.chars() {
        match c.to_ascii_uppercase() {
            'F' => f |= SlabFlags::CONSISTENCY_CHECKS,
            'Z' => f |= SlabFlags::RED_ZONE,
            'P' => f |= SlabFlags::POISON,
            '-' | 'U' | 'T' | 'A' | 'O' => {}
            _ => return Err(BadSlabDebug),
        }
    }
    Ok((f, cache))
}

/// Sets the debug flags applied to caches created from now on.
pub fn set_global_debug(flags: SlabFlags, only: Option<String>) {
    *GLOBAL_DEBUG.lock() = (flags, only);
}

/// `kmem_cache_create(name, size, align, flags, ctor)`.
pub fn kmem_cache_create(
    name: &'static str,
    size: usize,
    align: usize,
    flags: SlabFlags,
    ctor: Option<fn(*mut u8)>,
) -> Result<KmemCache, CreateError> {
    KmemCache::create(name, size, align, flags, ctor)
}

impl KmemCache {
    /// Creates a cache of `size`-byte objects aligned to `align`, with an
    /// optional constructor; errors name the cache. The name is `'static`
    /// (as Linux keeps the caller's string): every slab page's owner
    /// record points at it, however long the page outlives the caller.
    pub fn create(
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<fn(*mut u8)>,
    ) -> Result<KmemCache, CreateError> {
        Self::create_with(name, size, align, flags, ctor, true)
    }

    /// [`KmemCache::create`]; `sheaves: false` for the cache sheaves come from.
    fn create_with(
        name: &'static str,
        size: usize,
        align: usize,
        mut flags: SlabFlags,
        ctor: Option<fn(*mut u8)>,
        sheaves: bool,
    ) -> Result<KmemCache, CreateError> {
        if size == 0 || size > 8 * PAGE {
            return Err(CreateError::BadSize {
                name: InlineName::new(name),
                size,
            });
        }
        let align_req = align.max(1);
        if !align_req.is_power_of_two() || align_req > PAGE {
            return Err(CreateError::BadAlign {
                name: InlineName::new(name),
                align,
            });
        }
        {
            let g = GLOBAL_DEBUG.lock();
            if g.1.as_deref().is_none_or(|only| only == name) {
                flags |= g.0;
            }
        }
        if ctor.is_some() {
            // Like SLUB: a constructed object's state must survive free.
            flags.remove(SlabFlags::POISON);
        }
        let mut align = align_req.max(8);
        if flags.contains(SlabFlags::HWCACHE_ALIGN) {
            let mut ralign = CACHE_LINE;
            while size <= ralign / 2 {
                ralign /= 2;
            }
            align = align.max(ralign);
        }
        let object_size = size;
        let mut off = object_size;
        let mut rz_len = 0;
        if flags.contains(SlabFlags::RED_ZONE) {
            rz_len = (align_up(object_size, 8) - object_size).max(8);
            off += rz_len;
        }
        // Linux's `calculate_sizes`: the free pointer goes after the object
        // when a free object's contents must survive (a constructor), are
        // checked (poison), or may be red zone (an object smaller than a
        // word, or kmalloc's slack after `orig_size`); otherwise near the
        // middle of the object, away from both edges, so that a small
        // overflow from a neighbour or a write to a freed object's first
        // words leaves the free list intact.
        let freeptr_offset;
        if flags.contains(SlabFlags::POISON)
            || ctor.is_some()
            || (flags.contains(SlabFlags::RED_ZONE)
                && (object_size < 8 || flags.contains(SlabFlags::KMALLOC)))
        {
            off = align_up(off, 8);
            freeptr_offset = off;
            off += 8;
        } else {
            // ALIGN_DOWN(object_size / 2, sizeof(void *)): inside the object
            // rounded up to a word, which the slot always holds.
            freeptr_offset = (object_size / 2) & !7;
            off = off.max(freeptr_offset + 8);
        }
        let mut orig_size_offset = 0;
        if flags.contains(SlabFlags::KMALLOC | SlabFlags::RED_ZONE) {
            orig_size_offset = off;
            off += 8;
        }
        // With red zones, every slot starts with a left red zone (Linux's
        // `red_left_pad`): an underflow of an object, or an overflow of
        // the previous slot's metadata, lands there and is reported.
        let red_left_pad = if flags.contains(SlabFlags::RED_ZONE) {
            align_up(8, align)
        } else {
            0
        };
        let slot = align_up(red_left_pad + off, align);
        // Slots start after the header; objects `red_left_pad` into them.
        let slots_start = align_up(HEADER_SIZE, align);
        let first_offset = slots_start + red_left_pad;
        // Smallest order that wastes at most 1/8 of the slab (max order 3).
        let mut order = 0;
        loop {
            let bytes = PAGE << order;
            let n = bytes.saturating_sub(slots_start) / slot;
            let waste = bytes - slots_start - n * slot;
            if n >= 1 && (waste * 8 <= bytes || order == 3) {
                break;
            }
            order += 1;
            if order > 3 {
                return Err(CreateError::BadSize {
                    name: InlineName::new(name),
                    size,
                });
            }
        }
        let objects = ((PAGE << order) - slots_start) / slot;
        let objects = objects.min(MAX_OBJECTS);
        let nomem = |_| CreateError::NoMemory {
            name: InlineName::new(name),
        };
        let name_copy = crate::mm::global_alloc::try_string(name).map_err(nomem)?;
        let inner = crate::mm::global_alloc::try_box(CacheInner {
            name: name_copy,
            static_name: name,
            object_size,
            size: slot,
            flags,
            ctor,
            order,
            objects,
            first_offset,
            freeptr_offset,
            rz_len,
            red_left_pad,
            orig_size_offset,
            size_recip: (1u64 << 32).div_ceil(slot as u64),
            span: objects * slot,
            div_magic: (u64::MAX / slot as u64).wrapping_add(1),
            slab_tag: 0,
            private_bias: 0,
            min_partial: min_partial_for(slot),
            cookie: random_cookie(),
            lists: SpinLock::new(
                Lists {
                    partial: ListHead::EMPTY,
                    full: ListHead::EMPTY,
                    empty: ListHead::EMPTY,
                    active_objs: 0,
                    barn_full: ptr::null_mut(),
                    nr_full: 0,
                    barn_empty: ptr::null_mut(),
                    nr_empty: 0,
                    barn_objs: 0,
                },
                &LIST_LOCK_CLASS,
            ),
            sheaf_capacity: if sheaves {
                sheaf_capacity_for(slot, flags)
            } else {
                0
            },
            cpu: core::array::from_fn(|_| CpuSheaves::new()),
            barn_full_hint: AtomicUsize::new(0),
            pins: AtomicUsize::new(0),
            slabs_created: AtomicU64::new(0),
            slabs_freed: AtomicU64::new(0),
        })
        .map_err(nomem)?;
        let raw = alloc::boxed::Box::into_raw(inner);
        let mut reg = CACHES.lock();
        match reg.0.iter_mut().position(|p| p.is_null()) {
            Some(id) => {
                // SAFETY: just leaked above and not published: ours alone.
                unsafe {
                    (*raw).slab_tag = SLAB_PRIVATE_TAG | id;
                    (*raw).private_bias = (SLAB_PRIVATE_TAG | id).wrapping_sub((*raw).first_offset);
                }
                reg.0[id] = raw;
                CACHE_BY_ID[id].store(raw, Ordering::Release);
            }
            None => {
                drop(reg);
                // SAFETY: just leaked above and not published.
                drop(unsafe { alloc::boxed::Box::from_raw(raw) });
                return Err(CreateError::RegistryFull {
                    name: InlineName::new(name),
                    max: MAX_CACHES,
                });
            }
        }
        Ok(KmemCache {
            // SAFETY: Box::into_raw is never null.
            inner: unsafe { NonNull::new_unchecked(raw) },
        })
    }

    pub(crate) fn inner(&self) -> &CacheInner {
        // SAFETY: the inner lives until destroy succeeds.
        unsafe { self.inner.as_ref() }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// Object size as requested at creation, in bytes.
    pub fn object_size(&self) -> usize {
        self.inner().object_size
    }

    /// The cache's flags.
    pub fn flags(&self) -> SlabFlags {
        self.inner().flags
    }

    /// Where a free object keeps its (encoded) free pointer, in bytes from
    /// the object's start (Linux's `s->offset`): `object_size / 2` rounded
    /// down to a word, or past the object for caches whose free objects'
    /// contents matter (constructor, poison, some red zones).
    pub fn freeptr_offset(&self) -> usize {
        self.inner().freeptr_offset
    }

    /// Bytes of left red zone before each object (Linux's `s->red_left_pad`;
    /// 0 without [`SlabFlags::RED_ZONE`]).
    pub fn red_left_pad(&self) -> usize {
        self.inner().red_left_pad
    }

    /// Linux's `s->min_partial`: an empty slab is freed when the node
    /// already holds this many partial slabs (empty ones included).
    pub fn min_partial(&self) -> usize {
        self.inner().min_partial
    }

    /// `kmem_cache_alloc`: one object, or `Err` (never a panic).
    #[track_caller]
    #[inline]
    pub fn alloc(&self, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.inner().alloc(gfp)
    }

    /// kmalloc's allocation of `size` bytes from this class: the slack after
    /// `size` is red-zoned when the cache has red zones (SLUB's `orig_size`).
    #[track_caller]
    #[inline]
    pub(crate) fn alloc_kmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.inner().alloc_orig(gfp, size)
    }

    /// `kmem_cache_zalloc`.
    #[track_caller]
    pub fn zalloc(&self, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.inner().alloc(gfp | Gfp::__GFP_ZERO)
    }

    /// `kmem_cache_free`. Misuse (double free, wrong cache, foreign pointer)
    /// is reported and the free ignored, so the allocator stays intact.
    ///
    /// # Safety
    /// Once `obj` is freed the cache hands its memory out again, so nothing
    /// may use the object after this call: if `obj` is a live object of this
    /// cache, the caller must own it, with no reference to it (a `SlabBox`
    /// included) used afterwards. Pointers the checks reject (already free,
    /// another cache's object, not a slab object) are only reported.
    #[track_caller]
    #[inline]
    pub unsafe fn free(&self, obj: NonNull<u8>) {
        self.inner().free(obj.as_ptr())
    }

    /// `kmem_cache_alloc_bulk`: fills every entry of `objs` with an object,
    /// all or none (on failure the ones taken are freed and the error is
    /// returned). Fault injection applies once per call, as in Linux.
    #[track_caller]
    pub fn alloc_bulk(&self, gfp: Gfp, objs: &mut [*mut u8]) -> Result<(), AllocError> {
        self.inner().alloc_bulk(gfp, objs)
    }

    /// `kmem_cache_free_bulk`: frees every object of `objs`, each checked
    /// as by [`KmemCache::free`].
    ///
    /// # Safety
    /// As for [`KmemCache::free`], for each object.
    #[track_caller]
    pub unsafe fn free_bulk(&self, objs: &[*mut u8]) {
        let inner = self.inner();
        for &o in objs {
            inner.free(o);
        }
    }

    /// Returns the objects cached in every CPU's sheaves (main and spare)
    /// and the barn's full sheaves to their slabs (empty slabs beyond
    /// `min_partial` go back to the page allocator); returns the objects
    /// flushed. A CPU whose sheaf lock is held is waited for, not skipped.
    /// [`KmemCache::shrink`], [`KmemCache::info`], [`KmemCache::validate`],
    /// destroy and reclaim do it. It may wait: call it where sleeping is
    /// allowed.
    pub fn flush_sheaves(&self) -> usize {
        self.inner().flush_sheaves().0
    }

    /// `kmem_cache_shrink`: flushes the sheaves, frees the barn's empty
    /// sheaves (Linux's `barn_shrink`), then releases every empty slab;
    /// returns pages freed (of this cache's slabs).
    pub fn shrink(&self) -> usize {
        let inner = self.inner();
        let pages = inner.flush_sheaves().1;
        inner.barn_shrink();
        pages + inner.release_empty(0)
    }

    /// The slabinfo row, after flushing the sheaves (so that the partial /
    /// full / empty split is exact and `sheaf_objs` is 0).
    pub fn info(&self) -> SlabInfo {
        let inner = self.inner();
        inner.flush_sheaves();
        inner.info()
    }

    /// The slabinfo row as it stands, sheaves not flushed (as
    /// /proc/slabinfo reads it): `sheaf_objs` counts the cached objects.
    pub fn info_unflushed(&self) -> SlabInfo {
        self.inner().info()
    }

    /// Linux's `validate_slab_cache`: flushes the sheaves, then checks every
    /// slab under the list lock: objects counted in use = objects marked in
    /// the bitmap, and the free list holds the rest. A mismatch (an object
    /// lost between the lists, a corrupt free list) is printed and
    /// returned; `Ok` gives the slabs checked.
    pub fn validate(&self) -> Result<usize, SlabInconsistency> {
        let inner = self.inner();
        inner.flush_sheaves();
        let r = inner.validate();
        if let Err(e) = &r {
            crate::println!("BUG {}: {e}", inner.name);
        }
        r
    }

    /// `kmem_cache_destroy`. With objects still allocated, reports them
    /// and keeps the cache's memory (it is leaked, never reused).
    pub fn destroy(self) -> Result<(), DestroyError> {
        let r = self.destroy_inner();
        core::mem::forget(self);
        r
    }

    fn destroy_inner(&self) -> Result<(), DestroyError> {
        let inner = self.inner();
        // Objects cached in sheaves are free: flushed first (every CPU's,
        // a held sheaf lock waited for), they are not "live objects".
        inner.flush_sheaves();
        let live = inner.counts().active_objs;
        if live != 0 {
            let e = DestroyError::LiveObjects {
                cache: inner.name.clone(),
                count: live,
            };
            crate::println!("BUG {}: {e}", inner.name);
            debug::record(SlabBug::LiveObjectsAtDestroy, &inner.name);
            return Err(e);
        }
        // The (empty) slabs go first: their pages' private words carry the
        // registry slot, which a cache created next may take once it is
        // cleared below.
        inner.release_empty(0);
        // Unregistered before the sheaves are freed: `flush_all_sheaves`
        // looks at registered caches' sheaves without their list locks.
        let mut reg = CACHES.lock();
        for (id, p) in reg.0.iter_mut().enumerate() {
            if ptr::eq(*p, inner) {
                *p = ptr::null();
                CACHE_BY_ID[id].store(ptr::null_mut(), Ordering::Release);
            }
        }
        drop(reg);
        // A reclaimer may have pinned the cache before it was unregistered
        // (`flush_all_sheaves`): its drain finishes first.
        let mut spins = 0u32;
        while inner.pins.load(Ordering::Acquire) != 0 {
            if drain_may_yield() {
                crate::task::yield_now();
            } else {
                crate::platform::spin_relax(&mut spins);
            }
        }
        inner.free_all_sheaves();
        inner.release_empty(0);
        // SAFETY: unpublished, no slabs and no objects remain.
        drop(unsafe { alloc::boxed::Box::from_raw(self.inner.as_ptr()) });
        Ok(())
    }
}

impl Drop for KmemCache {
    fn drop(&mut self) {
        let _ = self.destroy_inner();
    }
}

/// A slab whose counts disagree (see [`KmemCache::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabInconsistency {
    /// The cache's name.
    pub cache: String,
    /// The slab's address.
    pub slab: usize,
    /// Objects the slab counts as taken (handed out or in a sheaf).
    pub inuse: usize,
    /// Objects marked in the allocation bitmap.
    pub allocated: usize,
    /// Objects on the slab's free list.
    pub free: usize,
    /// Object slots per slab.
    pub objects: usize,
}

impl fmt::Display for SlabInconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slab {:#x} of {} inconsistent: inuse {}, allocated {}, on the free list {}, objects {}",
            self.slab, self.cache, self.inuse, self.allocated, self.free, self.objects
        )
    }
}

/// One line of slabinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabInfo {
    /// The cache's name.
    pub name: String,
    /// Objects handed out to callers. Linux's slabinfo counts objects
    /// cached in sheaves as active too; kreclaim counts them apart (in
    /// [`SlabInfo::sheaf_objs`]) so that a leak check is exact without a
    /// flush. The text row prints this number.
    pub active_objs: usize,
    /// Free objects cached in sheaves (the CPUs' and the barn's): taken
    /// from their slabs, not handed out. 0 after [`KmemCache::info`] and
    /// [`KmemCache::shrink`] on one CPU.
    pub sheaf_objs: usize,
    /// Objects per sheaf (0: a debug cache, without sheaves).
    pub sheaf_capacity: usize,
    /// Full sheaves in the barn (at most [`MAX_FULL_SHEAVES`]).
    pub barn_full: usize,
    /// Empty sheaves in the barn (at most [`MAX_EMPTY_SHEAVES`]).
    pub barn_empty: usize,
    /// Object slots in all slabs.
    pub num_objs: usize,
    /// Bytes per object slot (with debug padding).
    pub objsize: usize,
    /// Object slots per slab.
    pub objperslab: usize,
    /// Pages per slab.
    pub pagesperslab: usize,
    /// Slabs holding at least one object (partial and full).
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// Slabs on the partial list.
    pub partial_slabs: usize,
    /// Slabs on the full list.
    pub full_slabs: usize,
    /// Empty slabs kept (up to `min_partial`).
    pub empty_slabs: usize,
    /// Created with `RECLAIM_ACCOUNT`.
    pub reclaimable: bool,
}

impl SlabHeader {
    fn base(&self) -> usize {
        self as *const Self as usize
    }
}

impl CacheInner {
    /// Linux's `freelist_ptr_encode` (SLAB_FREELIST_HARDENED): `ptr` XOR the
    /// cache's random cookie XOR the byte-swapped address `at` where it is
    /// stored. The end of a list (0) is encoded too, so no free pointer is
    /// ever stored in the clear.
    fn encode(&self, ptr_val: usize, at: usize) -> usize {
        ptr_val ^ self.cookie ^ at.swap_bytes()
    }

    /// Linux's `freelist_ptr_decode`: the inverse of [`Self::encode`].
    fn decode(&self, stored: usize, at: usize) -> usize {
        stored ^ self.cookie ^ at.swap_bytes()
    }

    /// Linux's `get_freepointer`: the next free object after free object
    /// `obj` (0: the end), decoded but not yet checked.
    ///
    /// # Safety
    /// `obj` is an object slot of a live slab of this cache, on its free list
    /// (so its free-pointer word is ours to read), under the list lock.
    unsafe fn get_freepointer(&self, obj: usize) -> usize {
        let at = self.freeptr_slot(obj);
        // SAFETY: the free-pointer word of a free object, per the contract.
        self.decode(unsafe { *at }, at as usize)
    }

    /// Linux's `set_freepointer`: makes `next` (0: none) follow free object
    /// `obj`.
    ///
    /// # Safety
    /// `obj` is an object slot of a live slab of this cache that is going on
    /// its free list (nobody uses it), under the list lock or before the slab
    /// is published.
    unsafe fn set_freepointer(&self, obj: usize, next: usize) {
        let at = self.freeptr_slot(obj);
        // SAFETY: the free-pointer word of an object slot we own, per the contract.
        unsafe { *at = self.encode(next, at as usize) };
    }

    /// Whether `p` is a free object of `slab`: an object boundary inside it
    /// whose allocation bit is clear. Every pointer read from a free list is
    /// checked so before it is followed: a decoded pointer that fails (the
    /// free pointer was overwritten) is reported, never dereferenced.
    fn is_free_object(&self, slab: &SlabHeader, p: usize) -> bool {
        let start = slab.base() + self.first_offset;
        let rel = p.wrapping_sub(start);
        if p < start || rel >= self.objects * self.size {
            return false;
        }
        let idx = self.index_of(rel);
        idx * self.size == rel
            && slab.allocated[idx / 64].load(Ordering::Relaxed) & (1 << (idx % 64)) == 0
    }

    /// The slab of `obj`, a free object from a sheaf: by masking
    /// while slabs sit at addresses aligned to their size (buddy blocks in a
    /// direct map always do), through the page otherwise; `None` if that is
    /// not a slab of this cache (an overwritten list).
    #[inline(always)]
    fn own_slab_of(&self, obj: usize) -> Option<*mut SlabHeader> {
        let s = if SLABS_ALIGNED.load(Ordering::Relaxed) {
            (obj & !((PAGE << self.order) - 1)) as *mut SlabHeader
        } else {
            slab_of(obj)?
        };
        // SAFETY: an aligned slab base of a page the list pointed into; the
        // header is readable while the slab lives.
        let ok = unsafe { (*s).magic == SLAB_MAGIC && ptr::eq((*s).cache, self) };
        ok.then_some(s)
    }

    /// `rel / size` for an offset `rel` from the first object of a slab
    /// (below 2^15: a slab is at most 32 KiB). Exact: with
    /// `m = ceil(2^32 / size) = (2^32 + e) / size`, `e < size <= 2^15`, the
    /// error `rel * e / 2^32 / size` stays below `1 / size`.
    #[inline(always)]
    fn index_of(&self, rel: usize) -> usize {
        if rel >= 1 << 15 {
            return rel / self.size;
        }
        ((rel as u64 * self.size_recip) >> 32) as usize
    }

    #[inline(always)]
    fn freeptr_slot(&self, obj: usize) -> *mut usize {
        (obj + self.freeptr_offset) as *mut usize
    }

    fn obj_addr(&self, slab: &SlabHeader, i: usize) -> usize {
        slab.base() + self.first_offset + i * self.size
    }

    fn unlink(l: &mut Lists, s: *mut SlabHeader) {
        // SAFETY: `s` is on the list named by its `list` field (lock held).
        unsafe {
            let head = match (*s).list {
                ListKind::Partial => &mut l.partial,
                ListKind::Full => &mut l.full,
                ListKind::Empty => &mut l.empty,
                ListKind::None => return,
            };
            if !(*s).prev.is_null() {
                (*(*s).prev).next = (*s).next;
            } else {
                head.head = (*s).next;
            }
            if !(*s).next.is_null() {
                (*(*s).next).prev = (*s).prev;
            }
            head.len -= 1;
            (*s).next = ptr::null_mut();
            (*s).prev = ptr::null_mut();
            (*s).list = ListKind::None;
        }
    }

    fn push(l: &mut Lists, s: *mut SlabHeader, kind: ListKind) {
        let head = match kind {
            ListKind::Partial => &mut l.partial,
            ListKind::Full => &mut l.full,
            ListKind::Empty => &mut l.empty,
            ListKind::None => return,
        };
        // SAFETY: `s` is a live slab not on any list (lock held).
        unsafe {
            (*s).prev = ptr::null_mut();
            (*s).next = head.head;
            if !head.head.is_null() {
                (*head.head).prev = s;
            }
            (*s).list = kind;
        }
        head.head = s;
        head.len += 1;
    }

    fn place(l: &mut Lists, s: *mut SlabHeader) {
        // SAFETY: live slab under the lock.
        let (inuse, objects) = unsafe { ((*s).inuse as usize, (*s).objects as usize) };
        let kind = if inuse == 0 {
            ListKind::Empty
        } else if inuse == objects {
            ListKind::Full
        } else {
            ListKind::Partial
        };
        // SAFETY: `s` is the same live slab of this cache, read under the list lock held via `l`.
        if unsafe { (*s).list } != kind {
            Self::unlink(l, s);
            Self::push(l, s, kind);
        }
    }

    #[track_caller]
    #[inline]
    fn alloc(&self, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.alloc_orig(gfp, self.object_size)
    }

    /// The size `obj` was allocated with (`object_size` unless tracked).
    pub(crate) fn orig_size(&self, obj: usize) -> usize {
        if self.orig_size_offset == 0 {
            return self.object_size;
        }
        // SAFETY: the metadata word of an object slot of ours.
        let v = unsafe { *((obj + self.orig_size_offset) as *const usize) };
        v.min(self.object_size)
    }

    /// Records that `obj` was allocated for `size` bytes and red-zones the
    /// slack after them.
    fn set_orig_size(&self, obj: usize, size: usize) {
        if self.orig_size_offset == 0 {
            return;
        }
        let size = size.min(self.object_size);
        // SAFETY: the metadata word and the object of a slot of ours.
        unsafe {
            *((obj + self.orig_size_offset) as *mut usize) = size;
            ptr::write_bytes(
                (obj + size) as *mut u8,
                debug::RED_ACTIVE,
                self.object_size - size,
            );
        }
    }

    /// `ksize` hands the whole object to the caller: stop red-zoning its
    /// slack (SLUB's `skip_orig_size_check`).
    pub(crate) fn skip_orig_size_check(&self, obj: usize) {
        if self.orig_size_offset != 0 {
            // SAFETY: the metadata word of an allocated object of ours.
            unsafe { *((obj + self.orig_size_offset) as *mut usize) = self.object_size };
        }
    }

    /// `kmem_cache_alloc` with the size asked for (kmalloc's `orig_size`).
    ///
    /// The fast path (a cache with sheaves, lockdep off): this CPU's sheaf
    /// lock tried (in the kernel a plain flag taken in a pinned stretch,
    /// [`CacheInner::acquire_fast`]; interrupts stay enabled), the main
    /// sheaf's newest object popped, the lock released: no lock waited for,
    /// no atomic, no call. Fault injection is checked first, with one
    /// relaxed load while it is off; anything else (lockdep on, the
    /// fs_reclaim annotation, the sheaf lock held by an interrupted context
    /// or a remote drain, an empty sheaf, a report) takes the slow path.
    /// `might_alloc`'s check that a sleeping allocation may sleep runs on
    /// the slow path only: a GFP_KERNEL allocation with interrupts masked
    /// or inside `preempt_disable()` that a sheaf serves with lockdep off is
    /// not reported (Linux checks it only with `CONFIG_DEBUG_ATOMIC_SLEEP`;
    /// kreclaim's lockdep on, the default, sends every allocation to the
    /// slow path, which does).
    #[track_caller]
    #[inline(always)]
    fn alloc_orig(&self, gfp: Gfp, orig_size: usize) -> Result<NonNull<u8>, AllocError> {
        // One load says lockdep is off, failslab is not armed and the
        // interrupt flag is native (see `platform::SLAB_ALLOC_FAST`); the
        // slow path checks failslab. A debug cache's CPUs have no main
        // sheaf: the pop fails. The pop spelled out, as kmalloc's.
        self.kmalloc_alloc(gfp, orig_size)
    }

    /// [`CacheInner::alloc_orig`]'s body (kmalloc calls it directly), with
    /// the fast path spelled out so that the path that pops an object
    /// returns it at once: the lock released on each way out of the sheaf
    /// separately, nothing merged and tested again.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn kmalloc_alloc(
        &self,
        gfp: Gfp,
        orig_size: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        // No "sleeping allocation in atomic context" check here (Linux
        // checks it only with CONFIG_DEBUG_ATOMIC_SLEEP): reading the
        // interrupt flag (`pushf`) cost a tenth of the hot pair under TCG.
        // The slow path checks (`might_alloc`), and lockdep on, kreclaim's
        // debug mode and the default, sends every allocation there.
        if crate::platform::SLAB_ALLOC_FAST.load(Ordering::Relaxed) {
            // SAFETY: SLAB_ALLOC_FAST is only set when the platform's CPU
            // line offset is where `cpu_line_offset_fast` reads it
            // (`refresh_alloc_fast`).
            #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
            let pcs = unsafe { self.acquire_fast() };
            // SAFETY: as above.
            #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
            let Some(pcs) = (unsafe { self.acquire_fast() }) else {
                return self.kmalloc_slow(gfp, orig_size);
            };
            // Never null: NO_SHEAF when the CPU has no main sheaf.
            let main = pcs.main.raw();
            // SAFETY: word 1 of the main sheaf (its size), which only the
            // holder of the sheaf lock changes (NO_SHEAF's is never
            // changed).
            let size = unsafe { Sheaf::word(main, 1) };
            // The newest object's slot; an empty sheaf wraps to a huge
            // value, and NO_SHEAF's size is above every capacity.
            let n = size.load(Ordering::Relaxed).wrapping_sub(1);
            if n < self.sheaf_capacity {
                size.store(n, Ordering::Relaxed);
                // SAFETY: slot n < size <= capacity of the sheaf.
                let obj = unsafe { Sheaf::word(main, SHEAF_HEADER_WORDS.wrapping_add(n)) }
                    .load(Ordering::Relaxed);
                pcs.release();
                if gfp.contains(Gfp::__GFP_ZERO) {
                    // SAFETY: the object is ours now.
                    unsafe { ptr::write_bytes(obj as *mut u8, 0, self.object_size) };
                }
                // SAFETY: sheaves hold object addresses, never 0; a
                // transmute rather than `new_unchecked`, whose dev-build
                // check would test it.
                return Ok(unsafe { core::mem::transmute::<usize, NonNull<u8>>(obj) });
            }
            pcs.release();
        }
        self.kmalloc_slow(gfp, orig_size)
    }

    /// [`CacheInner::kmalloc_alloc`]'s way to the slow path.
    #[track_caller]
    #[inline(always)]
    fn kmalloc_slow(&self, gfp: Gfp, orig_size: usize) -> Result<NonNull<u8>, AllocError> {
        let mut err = AllocError { gfp, order: 0 };
        match NonNull::new(self.alloc_slowpath_raw(gfp, orig_size, &mut err)) {
            Some(p) => Ok(p),
            None => Err(err),
        }
    }

    /// [`CacheInner::alloc_slowpath`] with the object as a pointer: null
    /// on failure, the error then in `err`.
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(crate) fn alloc_slowpath_raw(
        &self,
        gfp: Gfp,
        orig_size: usize,
        err: &mut AllocError,
    ) -> *mut u8 {
        if crate::mm::fault_inject::FAILSLAB.armed() {
            if let Err(e) = self.failslab(gfp) {
                *err = e;
                return ptr::null_mut();
            }
        } else {
            refresh_alloc_fast();
        }
        match self.alloc_slowpath(gfp, orig_size) {
            Ok(p) => p.as_ptr(),
            Err(e) => {
                *err = e;
                ptr::null_mut()
            }
        }
    }

    /// Linux's `should_failslab` for this cache, and the failure's report.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn failslab(&self, gfp: Gfp) -> Result<(), AllocError> {
        if !should_failslab(gfp, self.object_size) {
            return Ok(());
        }
        let gfp = crate::mm::scope::current_gfp_context(gfp);
        if !gfp.contains(Gfp::__GFP_NOWARN) {
            crate::println!(
                "{}: slab allocation failure (injected): cache {}, size {}, mode:{gfp}",
                crate::task::current().name(),
                self.name,
                self.object_size
            );
        }
        Err(AllocError { gfp, order: 0 })
    }

    /// Everything the fast path leaves out: `might_alloc` (the fs_reclaim
    /// annotation with lockdep on, the report of a sleeping allocation where
    /// sleeping is not allowed, which then goes on without direct reclaim),
    /// then sheaves swapped, exchanged with the barn or refilled, or, for a
    /// debug cache, the slabs directly.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn alloc_slowpath(&self, gfp: Gfp, orig_size: usize) -> Result<NonNull<u8>, AllocError> {
        // The task's NOFS/NOIO scope (`current_gfp_context`) only removes
        // __GFP_FS, __GFP_IO and __GFP_MOVABLE: `might_alloc` applies it
        // itself where it matters (lockdep), and the page allocation below
        // applies it too.
        let gfp = crate::mm::fs_reclaim::might_alloc_gfp(gfp);
        if self.sheaf_capacity == 0 {
            return self.alloc_from_slabs(gfp, orig_size);
        }
        let obj = self.alloc_from_sheaves(gfp)?;
        if gfp.contains(Gfp::__GFP_ZERO) {
            // SAFETY: the object is ours now.
            unsafe { ptr::write_bytes(obj as *mut u8, 0, self.object_size) };
        }
        // SAFETY: sheaves and slabs hand out object addresses, never 0.
        Ok(unsafe { NonNull::new_unchecked(obj as *mut u8) })
    }

    /// Takes the first object off `slab`'s free list (a slab with a free
    /// object: on the partial or empty list) and marks it taken. The next
    /// pointer is checked before it becomes the list's head: if it is not a
    /// free object of this slab, or the list ends while the slab counts free
    /// objects (a write after free hit the free pointer), the object is
    /// noted in `bad` for a report once the lock is dropped, and the rest of
    /// the list is abandoned as Linux does ("Marking all objects used"):
    /// every object of the slab counts as taken, so the corrupt list is
    /// never followed. `None` (and the slab full) if the head itself is bad.
    /// List lock held by the caller (`l`).
    fn take_free_object(
        &self,
        l: &mut Lists,
        slab: &mut SlabHeader,
        bad: &mut BadFreeptr,
    ) -> Option<usize> {
        let obj = slab.freelist;
        if obj == 0 || !self.is_free_object(slab, obj) {
            // Only a corrupt list leads here.
            bad.note(obj);
            self.mark_all_used(l, slab);
            return None;
        }
        // SAFETY: `obj` is a free object of this live slab (checked above),
        // under the list lock.
        let next = unsafe { self.get_freepointer(obj) };
        let idx = self.index_of(obj - slab.base() - self.first_offset);
        let w = &slab.allocated[idx / 64];
        w.store(
            w.load(Ordering::Relaxed) | 1 << (idx % 64),
            Ordering::Relaxed,
        );
        slab.inuse += 1;
        l.active_objs += 1;
        let ok = if next == 0 {
            slab.inuse as usize == self.objects
        } else {
            self.is_free_object(slab, next)
        };
        if ok {
            slab.freelist = next;
        } else {
            bad.note(obj);
            self.mark_all_used(l, slab);
        }
        Some(obj)
    }

    /// Abandons `slab`'s free list: every object not yet taken is marked
    /// taken (and counted active: leaked, never handed out). List lock held.
    #[cold]
    fn mark_all_used(&self, l: &mut Lists, slab: &mut SlabHeader) {
        for i in 0..self.objects {
            let w = &slab.allocated[i / 64];
            let v = w.load(Ordering::Relaxed);
            if v & (1 << (i % 64)) == 0 {
                w.store(v | 1 << (i % 64), Ordering::Relaxed);
                slab.inuse += 1;
                l.active_objs += 1;
            }
        }
        slab.freelist = 0;
    }

    /// One object straight from the slabs (debug caches; sheaves' own
    /// memory; a CPU without sheaves): debug checks, zeroing, `orig_size`.
    /// No fault injection: the callers checked it (or are internal).
    fn alloc_from_slabs(&self, gfp: Gfp, orig_size: usize) -> Result<NonNull<u8>, AllocError> {
        let gfp = crate::mm::scope::current_gfp_context(gfp);
        loop {
            let mut bad = BadFreeptr::NONE;
            let got = {
                let mut l = self.lists.lock();
                let s = if !l.partial.head.is_null() {
                    l.partial.head
                } else {
                    l.empty.head
                };
                if s.is_null() {
                    None
                } else {
                    // SAFETY: a live slab of this cache with a free object.
                    let obj = self.take_free_object(&mut l, unsafe { &mut *s }, &mut bad);
                    Self::place(&mut l, s);
                    Some(obj)
                }
            };
            bad.report(self);
            let obj = match got {
                Some(Some(obj)) => obj,
                // The slab's free list was corrupt: take another slab.
                Some(None) => continue,
                None => {
                    self.new_slab(gfp)?;
                    continue;
                }
            };
            if self
                .flags
                .intersects(SlabFlags::POISON | SlabFlags::RED_ZONE)
            {
                // SAFETY: `obj` was just taken off a free list of this
                // cache's live slab, so only this caller holds it.
                unsafe { debug::check_on_alloc(self, obj) };
            }
            if gfp.contains(Gfp::__GFP_ZERO) {
                // SAFETY: the object is ours now.
                unsafe { ptr::write_bytes(obj as *mut u8, 0, self.object_size) };
            }
            self.set_orig_size(obj, orig_size);
            // SAFETY: non-null by construction.
            return Ok(unsafe { NonNull::new_unchecked(obj as *mut u8) });
        }
    }

    /// The sheaves of the CPU the caller runs on, if its number can be read
    /// inline (`None`: the caller takes its slow path, which asks the
    /// platform; no call on the fast paths, so they save no registers). A
    /// CPU numbered `MAX_CPUS` or above (none is: the platform keeps
    /// numbers below `NR_CPUS`) would share another's, which their lock
    /// makes safe; the mask spares the fast paths a bounds check.
    #[inline(always)]
    fn this_cpu_sheaves(&self) -> Option<&CpuSheaves> {
        let cpu = crate::platform::cpu_id_inline()?;
        Some(&self.cpu[cpu & (MAX_CPUS - 1)])
    }

    /// This CPU's sheaves with their lock held (tried, never waited for):
    /// where the lock is plain ([`SheafMode::Pinned`]) the task is pinned
    /// first, its CPU read after, and the guard ends the pinning.
    #[inline]
    fn lock_this_cpu(&self) -> Option<(&CpuSheaves, SheafGuard<'_>)> {
        let mode = SheafMode::get();
        if mode == SheafMode::Pinned {
            crate::task::preempt_disable();
        }
        if let Some(pcs) = self.cpu.get(sheaf_cpu())
            && pcs.try_acquire()
        {
            let kind = if mode == SheafMode::Pinned {
                GuardKind::Pinned
            } else {
                GuardKind::Local
            };
            return Some((pcs, SheafGuard { pcs, kind }));
        }
        if mode == SheafMode::Pinned {
            crate::task::preempt_enable();
        }
        None
    }

    /// The free fast path's push for callers without the fast mem_map's
    /// hit: this CPU's sheaves found through [`CacheInner::this_cpu_sheaves`],
    /// pinned first where the lock is plain.
    #[inline(always)]
    fn push_this_cpu(&self, addr: usize) -> bool {
        let pinned = SheafMode::get() == SheafMode::Pinned;
        if pinned {
            crate::task::preempt_disable();
        }
        let pushed = self.this_cpu_sheaves().is_some_and(|pcs| {
            if !pcs.try_acquire() {
                return false;
            }
            let pushed = self.sheaf_push(pcs, addr);
            pcs.release();
            pushed
        });
        if pinned {
            crate::task::preempt_enable();
        }
        pushed
    }

    /// [`CacheInner::this_cpu_sheaves`] for fast paths behind a flag that
    /// implies [`crate::platform::cpu_line_offset_ready`] (`SLAB_ALLOC_FAST`,
    /// a hit in the fast mem_map copy): in the kernel one `gs:` load.
    ///
    /// # Safety
    /// The caller saw such a flag set.
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    #[inline(always)]
    unsafe fn this_cpu_sheaves_fast(&self) -> Option<&CpuSheaves> {
        // SAFETY: the caller's contract.
        let off = unsafe { crate::platform::cpu_line_offset_fast() }?;
        // SAFETY: the platform's offset.
        Some(unsafe { self.cpu_at(off) })
    }

    /// The CPU's sheaves at byte offset `off` into `self.cpu`, not an
    /// `Option` (the dev build would test a transmuted reference for null).
    ///
    /// # Safety
    /// `off` is from [`crate::platform::cpu_line_offset_fast`]: below
    /// `NR_CPUS * CPU_LINE` and a multiple of CPU_LINE, the size of
    /// `CpuSheaves`.
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    #[inline(always)]
    unsafe fn cpu_at(&self, off: usize) -> &CpuSheaves {
        let pcs = self.cpu.as_ptr().cast::<u8>().wrapping_add(off);
        // SAFETY: the caller's contract: an entry of `self.cpu`. A
        // transmute rather than `&*` (no dev-build alignment check).
        #[allow(clippy::transmute_ptr_to_ref)]
        unsafe {
            core::mem::transmute::<*const u8, &CpuSheaves>(pcs)
        }
    }

    /// Pops the newest object of `pcs`'s main sheaf, if it has one. The
    /// caller holds `pcs`'s sheaf lock.
    #[inline(always)]
    fn sheaf_pop(&self, pcs: &CpuSheaves) -> Option<usize> {
        // Never null: NO_SHEAF when the CPU has no main sheaf.
        let main = pcs.main.raw();
        // SAFETY: word 1 of the main sheaf (its size), which only the
        // holder of the sheaf lock changes (NO_SHEAF's is never changed).
        let size = unsafe { Sheaf::word(main, 1) };
        // The newest object's slot; an empty sheaf wraps to a huge value,
        // and NO_SHEAF's size is above every capacity.
        let n = size.load(Ordering::Relaxed).wrapping_sub(1);
        if n >= self.sheaf_capacity {
            return None;
        }
        size.store(n, Ordering::Relaxed);
        // SAFETY: slot n < size <= capacity of the sheaf.
        Some(
            unsafe { Sheaf::word(main, SHEAF_HEADER_WORDS.wrapping_add(n)) }
                .load(Ordering::Relaxed),
        )
    }

    /// Pushes `addr` onto `pcs`'s main sheaf if it has room and `addr` is
    /// not the object freed last (SLUB's naive double-free check). The
    /// caller holds `pcs`'s sheaf lock.
    #[inline(always)]
    fn sheaf_push(&self, pcs: &CpuSheaves, addr: usize) -> bool {
        // Never null: NO_SHEAF when the CPU has no main sheaf.
        let main = pcs.main.raw();
        // SAFETY: word 1 of the main sheaf (its size), which only the
        // holder of the sheaf lock changes (NO_SHEAF's is never changed).
        let size = unsafe { Sheaf::word(main, 1) };
        // A full sheaf, and NO_SHEAF, whose size is above every capacity.
        let n = size.load(Ordering::Relaxed);
        if n >= self.sheaf_capacity {
            return false;
        }
        // SAFETY: the word before slot n (n < capacity): slot n - 1, or
        // with n == 0 the size word (0, never an address).
        let last = unsafe { Sheaf::word(main, SHEAF_HEADER_WORDS.wrapping_add(n).wrapping_sub(1)) };
        if last.load(Ordering::Relaxed) == addr {
            return false;
        }
        // SAFETY: slot n < capacity of the sheaf.
        unsafe { Sheaf::word(main, SHEAF_HEADER_WORDS.wrapping_add(n)) }
            .store(addr, Ordering::Relaxed);
        size.store(n.wrapping_add(1), Ordering::Relaxed);
        true
    }

    /// [`CacheInner::sheaf_push`] onto this CPU's sheaves under their lock
    /// ([`CacheInner::acquire_fast`]): `false` if the lock was taken or the
    /// push refused.
    ///
    /// # Safety
    /// As for [`CacheInner::acquire_fast`].
    #[inline(always)]
    unsafe fn push_fast(&self, addr: usize) -> bool {
        // SAFETY: the caller's contract.
        #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
        let pcs = unsafe { self.acquire_fast() };
        // SAFETY: the caller's contract.
        #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
        let Some(pcs) = (unsafe { self.acquire_fast() }) else {
            return false;
        };
        let pushed = self.sheaf_push(pcs, addr);
        pcs.release();
        pushed
    }

    /// This CPU's sheaves with their `locked` flag taken, for the fast
    /// paths (the kernel build, [`SheafMode::Pinned`]): or, if they were
    /// taken ([`BUSY_SHEAVES`]), sheaves without a sheaf, whose pop or push
    /// fails and sends the caller to its slow path. The caller releases
    /// either ([`CpuSheaves::release`]).
    ///
    /// The task is not pinned by its preempt count here: from reading its
    /// CPU's line offset (`gs:`) to taking that CPU's flag it runs one
    /// stretch of assembly whose address range is listed in the
    /// `kreclaim_pinned` section, and an interrupt that comes inside such a
    /// range pins the task for the handler's length
    /// (`platform::in_pinned_section`, checked by the kernel's interrupt
    /// entry): the tick does not preempt it, and a remote taker's barrier
    /// IPI is not answered there (`arch::x86_64::smp::membarrier_ack_local`).
    /// The stretch is what Linux's `preempt_disable` covers in
    /// `local_trylock`, at no cost to the fast path (Linux's restartable
    /// sequences mark code ranges the same way). Once the flag is taken the
    /// task may be preempted and even move: the flag, held, keeps every
    /// other context out of these sheaves (this CPU's finds it set, a
    /// remote taker's barrier orders the store before its look), and only
    /// the holder clears it.
    ///
    /// # Safety
    /// The caller saw `SLAB_ALLOC_FAST` or a hit in the fast mem_map copy
    /// (the kernel's gs layout is installed).
    #[cfg(all(target_arch = "x86_64", target_os = "none", feature = "qemu"))]
    #[inline(always)]
    unsafe fn acquire_fast(&self) -> &CpuSheaves {
        let pcs: *const CpuSheaves;
        // SAFETY: gs:[line] is this CPU's line offset (the caller's
        // contract), an entry of `self.cpu`; the flags are that entry's
        // bytes; BUSY_SHEAVES is a static. The range record and the busy
        // stub go to sections of their own (`kreclaim_pinned`, and `.text`
        // for the stub); both jumps stay inside this asm.
        unsafe {
            core::arch::asm!(
                "2:",
                "mov {p}, qword ptr gs:[{line}]",
                "add {p}, {base}",
                // Both flags in one load: `remote` is the byte after
                // `locked` (asserted below `REMOTE_OFFSET`).
                "cmp word ptr [{p} + {locked}], 0",
                "jnz 4f",
                "mov byte ptr [{p} + {locked}], 1",
                "3:",
                ".pushsection kreclaim_pinned, \"a\"",
                ".balign 4",
                ".long 2b - .",
                ".long 3b - .",
                ".popsection",
                ".pushsection .text.kreclaim_sheaf_busy, \"ax\"",
                "4:",
                "lea {p}, [rip + {busy}]",
                "jmp 3b",
                ".popsection",
                p = out(reg) pcs,
                base = in(reg) self.cpu.as_ptr(),
                line = const crate::platform::KERNEL_LINE_OFFSET_GS_OFFSET,
                locked = const LOCKED_OFFSET,
                busy = sym BUSY_SHEAVES,
                options(nostack),
            );
        }
        // SAFETY: an entry of `self.cpu` or BUSY_SHEAVES. A transmute
        // rather than `&*` (no dev-build alignment check).
        #[allow(clippy::transmute_ptr_to_ref)]
        unsafe {
            core::mem::transmute::<*const CpuSheaves, &CpuSheaves>(pcs)
        }
    }

    /// [`CacheInner::acquire_fast`] outside the kernel build: this CPU's
    /// sheaves by the inline CPU number, their lock tried as
    /// [`SheafMode`] says (the host's threads: plain; others: exchange).
    ///
    /// # Safety
    /// The caller saw `SLAB_ALLOC_FAST` or a hit in the fast mem_map copy.
    #[cfg(not(all(target_arch = "x86_64", target_os = "none", feature = "qemu")))]
    #[inline(always)]
    unsafe fn acquire_fast(&self) -> Option<&CpuSheaves> {
        // SAFETY: the caller's contract.
        let pcs = unsafe { self.this_cpu_sheaves_fast() }?;
        pcs.try_acquire().then_some(pcs)
    }

    /// The allocation slow path of a cache with sheaves: this CPU's main
    /// sheaf is empty (or missing). In turn: give the CPU its sheaves; swap
    /// in the spare if it has objects; take a full sheaf from the barn for
    /// the empty main; refill main from the slabs; a new slab.
    ///
    /// All of it runs under this CPU's sheaf lock; if that is held (the
    /// caller interrupted or preempted its holder, or re-entered this cache
    /// from under it) the object comes straight from the slabs. Every
    /// decision that touches the barn or the slabs is taken after the list
    /// lock is acquired, on state read afresh.
    fn alloc_from_sheaves(&self, gfp: Gfp) -> Result<usize, AllocError> {
        let mut fresh = FreshSheaves::NONE;
        let r = loop {
            let Some((pcs, g)) = self.lock_this_cpu() else {
                break self
                    .alloc_from_slabs(gfp, self.object_size)
                    .map(|p| p.as_ptr() as usize);
            };
            if let Some(obj) = self.sheaf_pop(pcs) {
                break Ok(obj);
            }
            match self.install_sheaves(pcs, g, &mut fresh) {
                Install::Ready(g) => {
                    let main = pcs.main.load(Ordering::Relaxed);
                    let spare = pcs.spare.load(Ordering::Relaxed);
                    if Sheaf::len(spare) != 0 {
                        pcs.main.store(spare, Ordering::Relaxed);
                        pcs.spare.store(main, Ordering::Relaxed);
                        continue;
                    }
                    let mut l = self.lists.lock();
                    let main = pcs.main.load(Ordering::Relaxed);
                    let spare = pcs.spare.load(Ordering::Relaxed);
                    if Sheaf::len(main) != 0 || Sheaf::len(spare) != 0 {
                        continue; // re-entered meanwhile: take it from the top
                    }
                    let full = l.barn_full;
                    if !full.is_null() {
                        // SAFETY: a sheaf on the barn's full list, under the lock.
                        unsafe {
                            l.barn_full = (*full).next;
                            (*full).next = ptr::null_mut();
                        }
                        l.nr_full -= 1;
                        self.barn_full_hint.store(l.nr_full, Ordering::Relaxed);
                        l.barn_objs -= Sheaf::len(full);
                        pcs.main.store(full, Ordering::Relaxed);
                        let surplus = Self::barn_put_empty(&mut l, main);
                        drop(l);
                        drop(g);
                        Self::free_sheaf(surplus);
                        continue;
                    }
                    let mut bad = BadFreeptr::NONE;
                    let got = self.refill_locked(&mut l, main, &mut bad);
                    drop(l);
                    if bad.n != 0 {
                        drop(g);
                        bad.report(self);
                        continue;
                    }
                    if got != 0 {
                        continue;
                    }
                    // No slab has a free object: a new one, without the
                    // sheaf lock (the page allocator may reclaim and sleep).
                    drop(g);
                    if let Err(e) = self.new_slab(crate::mm::scope::current_gfp_context(gfp)) {
                        break Err(e);
                    }
                }
                Install::Retry => {}
                Install::NoSheaves => {
                    break self
                        .alloc_from_slabs(gfp, self.object_size)
                        .map(|p| p.as_ptr() as usize);
                }
            }
        };
        fresh.free();
        r
    }

    /// Gives CPU `pcs` a main and a spare sheaf if it lacks them, from
    /// `fresh`, or allocates `fresh` ones without the sheaf lock (then the
    /// caller retries). The caller holds the sheaf lock `g`, returned if the
    /// CPU has both sheaves.
    fn install_sheaves<'a>(
        &self,
        pcs: &'a CpuSheaves,
        g: SheafGuard<'a>,
        fresh: &mut FreshSheaves,
    ) -> Install<'a> {
        let mut missing = false;
        for slot in [&pcs.main, &pcs.spare] {
            if slot.load(Ordering::Relaxed).is_null() {
                match fresh.take() {
                    Some(sh) => slot.store(sh, Ordering::Relaxed),
                    None => missing = true,
                }
            }
        }
        if !missing {
            return Install::Ready(g);
        }
        drop(g);
        if fresh.tried {
            // Allocated once already and still missing: the allocation failed.
            return Install::NoSheaves;
        }
        fresh.tried = true;
        for sh in fresh.sheaves.iter_mut() {
            *sh = self.alloc_sheaf();
        }
        Install::Retry
    }

    /// Puts empty sheaf `sh` on the barn's empty list, or returns it for the
    /// caller to free (after the lock) if the barn has enough.
    fn barn_put_empty(l: &mut Lists, sh: *mut Sheaf) -> *mut Sheaf {
        if l.nr_empty >= MAX_EMPTY_SHEAVES {
            return sh;
        }
        // SAFETY: a sheaf no CPU holds any more, under the list lock.
        unsafe { (*sh).next = l.barn_empty };
        l.barn_empty = sh;
        l.nr_empty += 1;
        ptr::null_mut()
    }

    /// Fills sheaf `sh` (empty) from the slabs' free lists, partial slabs
    /// first, in free-list order: the first object taken is popped first.
    /// Returns the objects taken. List lock held; corrupt free pointers
    /// found are noted in `bad`, for the caller to report after the lock.
    fn refill_locked(&self, l: &mut Lists, sh: *mut Sheaf, bad: &mut BadFreeptr) -> usize {
        let start = Sheaf::len(sh);
        let mut n = start;
        while n < self.sheaf_capacity {
            let s = if !l.partial.head.is_null() {
                l.partial.head
            } else {
                l.empty.head
            };
            if s.is_null() {
                break;
            }
            // SAFETY: a live slab of this cache with a free object.
            let slab = unsafe { &mut *s };
            while n < self.sheaf_capacity && slab.freelist != 0 {
                let Some(obj) = self.take_free_object(l, slab, bad) else {
                    break;
                };
                // SAFETY: a slot below the capacity of a sheaf of ours.
                unsafe { *Sheaf::slot(sh, n) = obj };
                n += 1;
            }
            Self::place(l, s);
        }
        // SAFETY: slots start..n of the sheaf were just written.
        unsafe {
            core::slice::from_raw_parts_mut(Sheaf::slot(sh, start), n - start).reverse();
            (*sh).size.store(n, Ordering::Relaxed);
        }
        n - start
    }

    /// An empty sheaf for this cache, from the `slab_sheaf` cache (which has
    /// no sheaves itself, so sheaves never recurse), without blocking and
    /// without fault injection; null if none could be had (the caller goes
    /// to the slabs instead).
    fn alloc_sheaf(&self) -> *mut Sheaf {
        let Some(k) = SHEAF_CACHE.get() else {
            return ptr::null_mut(); // early boot
        };
        debug_assert!((SHEAF_HEADER_WORDS + self.sheaf_capacity) * 8 <= SHEAF_BYTES);
        match k
            .inner()
            .alloc_from_slabs(Gfp::GFP_NOWAIT | Gfp::__GFP_NOWARN, SHEAF_BYTES)
        {
            Ok(p) => {
                let sh = p.as_ptr() as *mut Sheaf;
                // SAFETY: a fresh object of SHEAF_BYTES bytes, ours.
                unsafe {
                    sh.write(Sheaf {
                        next: ptr::null_mut(),
                        size: AtomicUsize::new(0),
                    })
                };
                sh
            }
            Err(_) => ptr::null_mut(),
        }
    }

    /// Frees an empty sheaf no CPU or barn holds (null: nothing).
    fn free_sheaf(sh: *mut Sheaf) {
        if sh.is_null() {
            return;
        }
        let addr = sh as usize;
        if let Some(s) = slab_of(addr) {
            // SAFETY: a live slab; its cache (slab_sheaf) outlives it.
            let c = unsafe { &*(*s).cache };
            c.free_to_slab(s, addr);
        }
    }

    /// Returns the objects of sheaf `sh` to their slabs' free lists, oldest
    /// first (so the newest end first on their slabs), and empties it; slabs
    /// empty beyond `min_partial` are unlinked into `out`. An object whose
    /// slab has it free already was freed twice: noted in `df`, not linked
    /// again. Returns the objects returned. List lock held.
    fn flush_sheaf_locked(
        &self,
        l: &mut Lists,
        sh: *mut Sheaf,
        out: &mut Discards,
        df: &mut DoubleFrees,
    ) -> usize {
        let n = Sheaf::len(sh);
        for i in 0..n {
            // SAFETY: slot i < size of a live sheaf of ours.
            let obj = unsafe { *Sheaf::slot(sh, i) };
            let Some(s) = self.own_slab_of(obj) else {
                continue; // an overwritten sheaf: leak rather than corrupt a slab
            };
            // SAFETY: a live slab of this cache, under the list lock.
            let slab = unsafe { &mut *s };
            let idx = self.index_of(obj - slab.base() - self.first_offset);
            let w = &slab.allocated[idx / 64];
            let bit = 1u64 << (idx % 64);
            if w.load(Ordering::Relaxed) & bit == 0 {
                df.note(obj);
                continue;
            }
            w.store(w.load(Ordering::Relaxed) & !bit, Ordering::Relaxed);
            // SAFETY: `obj` is an object of the live slab `s` going on its
            // free list, under the list lock.
            unsafe { self.set_freepointer(obj, slab.freelist) };
            slab.freelist = obj;
            slab.inuse -= 1;
            l.active_objs -= 1;
            let nr_partial = l.partial.len + l.empty.len;
            Self::place(l, s);
            if slab.inuse == 0 && nr_partial >= self.min_partial {
                Self::unlink(l, s);
                out.add(s);
            }
        }
        // SAFETY: a live sheaf of ours.
        unsafe { (*sh).size.store(0, Ordering::Relaxed) };
        n
    }

    /// Empties every CPU's sheaves (main and spare) and the barn's full
    /// sheaves into the slabs (Linux's `flush_all` and `barn_shrink`, done
    /// on `kmem_cache_shrink`, destroy, slabinfo reads that want exact
    /// lists, and reclaim); returns `(objects, pages)`: objects flushed,
    /// pages of empty slabs beyond `min_partial` released. The empty
    /// sheaves stay for reuse.
    ///
    /// Linux queues `flush_cpu_sheaves` work on every CPU and waits for it;
    /// here the caller empties each CPU's sheaves itself, taking them from
    /// afar ([`CpuSheaves::lock_remote`]: never the owner's flag), waiting
    /// while another context holds them ([`CpuSheaves::lock_for_drain`]):
    /// never a silent skip. A CPU whose lock stays held for
    /// [`DRAIN_PATIENCE_NS`] is reported with the cache's name.
    pub(crate) fn flush_sheaves(&self) -> (usize, usize) {
        if self.sheaf_capacity == 0 {
            return (0, 0);
        }
        let mut d = Discards::NONE;
        let mut df = DoubleFrees::NONE;
        let mut n = 0;
        let mut surplus = ptr::null_mut::<Sheaf>();
        {
            for (cpu, pcs) in self.cpu.iter().enumerate() {
                // A CPU that never used the cache has no sheaves; sheaves
                // are installed empty, so one arriving meanwhile holds
                // nothing to drain.
                if pcs.main.load(Ordering::Relaxed).is_null()
                    && pcs.spare.load(Ordering::Relaxed).is_null()
                {
                    continue;
                }
                let Some(_g) = pcs.lock_for_drain(cpu) else {
                    crate::println!(
                        "BUG {}: CPU {cpu}'s sheaves stayed locked for {} s: not drained",
                        self.name,
                        DRAIN_PATIENCE_NS / 1_000_000_000
                    );
                    continue;
                };
                let mut l = self.lists.lock();
                for slot in [&pcs.main, &pcs.spare] {
                    let sh = slot.load(Ordering::Relaxed);
                    if !sh.is_null() {
                        n += self.flush_sheaf_locked(&mut l, sh, &mut d, &mut df);
                    }
                }
            }
            let mut l = self.lists.lock();
            while !l.barn_full.is_null() {
                let sh = l.barn_full;
                // SAFETY: a sheaf on the barn's full list, under the lock.
                l.barn_full = unsafe { (*sh).next };
                l.nr_full -= 1;
                n += self.flush_sheaf_locked(&mut l, sh, &mut d, &mut df);
                let extra = Self::barn_put_empty(&mut l, sh);
                if !extra.is_null() {
                    // SAFETY: a sheaf nobody else holds now, chained for freeing.
                    unsafe { (*extra).next = surplus };
                    surplus = extra;
                }
            }
            l.barn_objs = 0;
            self.barn_full_hint.store(0, Ordering::Relaxed);
            drop(l);
        }
        while !surplus.is_null() {
            // SAFETY: chained above; nobody else holds it.
            let next = unsafe { (*surplus).next };
            Self::free_sheaf(surplus);
            surplus = next;
        }
        df.report(self);
        (n, self.discard_all(d))
    }

    /// Linux's `barn_shrink` after a flush: frees the barn's empty sheaves
    /// (the flush emptied its full ones onto that list), detached under the
    /// list lock and freed after it. Returns the sheaves freed.
    pub(crate) fn barn_shrink(&self) -> usize {
        let mut chain = {
            let mut l = self.lists.lock();
            l.nr_empty = 0;
            core::mem::replace(&mut l.barn_empty, ptr::null_mut())
        };
        let mut n = 0;
        while !chain.is_null() {
            // SAFETY: detached above; nobody else holds it.
            let next = unsafe { (*chain).next };
            Self::free_sheaf(chain);
            chain = next;
            n += 1;
        }
        n
    }

    /// Detaches every sheaf of the cache (all CPUs and the barn) under the
    /// list lock and frees them: for destroy, after the sheaves were flushed.
    fn free_all_sheaves(&self) {
        let mut chain = ptr::null_mut::<Sheaf>();
        {
            let mut l = self.lists.lock();
            let mut push = |sh: *mut Sheaf| {
                if !sh.is_null() {
                    // SAFETY: a sheaf detached under the lock.
                    unsafe { (*sh).next = chain };
                    chain = sh;
                }
            };
            for pcs in &self.cpu {
                push(pcs.main.swap(ptr::null_mut(), Ordering::Relaxed));
                push(pcs.spare.swap(ptr::null_mut(), Ordering::Relaxed));
            }
            let l = &mut *l;
            for head in [&mut l.barn_full, &mut l.barn_empty] {
                let mut sh = core::mem::replace(head, ptr::null_mut());
                while !sh.is_null() {
                    // SAFETY: a barn sheaf, under the lock.
                    let next = unsafe { (*sh).next };
                    push(sh);
                    sh = next;
                }
            }
            l.nr_full = 0;
            l.nr_empty = 0;
            l.barn_objs = 0;
            self.barn_full_hint.store(0, Ordering::Relaxed);
        }
        while !chain.is_null() {
            // SAFETY: chained above; nobody else holds it.
            let next = unsafe { (*chain).next };
            Self::free_sheaf(chain);
            chain = next;
        }
    }

    fn discard_all(&self, d: Discards) -> usize {
        let mut pages = 0;
        let mut s = d.head;
        while !s.is_null() {
            // SAFETY: an unlinked slab chained by `Discards::add`.
            let next = unsafe { (*s).next };
            self.discard_slab(s);
            pages += 1 << self.order;
            s = next;
        }
        pages
    }

    /// Objects in the CPUs' sheaves (a snapshot of other CPUs' own). The
    /// caller holds the list lock or the registry lock (the cache is
    /// registered), so no sheaf read here can be freed meanwhile.
    fn cpu_sheaf_objs(&self) -> usize {
        self.cpu
            .iter()
            .map(|pcs| {
                Sheaf::len(pcs.main.load(Ordering::Relaxed))
                    + Sheaf::len(pcs.spare.load(Ordering::Relaxed))
            })
            .sum()
    }

    /// See [`KmemCache::validate`]. Objects in sheaves count as taken for
    /// their slabs (`inuse` and the bitmap both include them).
    fn validate(&self) -> Result<usize, SlabInconsistency> {
        let mut bad = None;
        let mut checked = 0;
        {
            let l = self.lists.lock();
            'lists: for head in [l.partial.head, l.full.head, l.empty.head] {
                let mut s = head;
                while !s.is_null() {
                    // SAFETY: a slab on our lists, under the list lock.
                    let slab = unsafe { &*s };
                    let allocated: usize = slab
                        .allocated
                        .iter()
                        .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
                        .sum();
                    let mut free = 0;
                    let mut obj = slab.freelist;
                    // A pointer that is not a free object of the slab ends
                    // the walk (and the count is off): never followed.
                    while obj != 0 && free <= self.objects && self.is_free_object(slab, obj) {
                        free += 1;
                        // SAFETY: a free object of this slab (checked), under the lock.
                        obj = unsafe { self.get_freepointer(obj) };
                    }
                    if obj != 0 {
                        free = self.objects + 1; // corrupt or cyclic
                    }
                    let inuse = slab.inuse as usize;
                    if inuse != allocated || free + inuse != self.objects {
                        bad = Some(SlabInconsistency {
                            cache: String::new(),
                            slab: slab.base(),
                            inuse,
                            allocated,
                            free,
                            objects: self.objects,
                        });
                        break 'lists;
                    }
                    checked += 1;
                    s = slab.next;
                }
            }
        }
        match bad {
            None => Ok(checked),
            Some(mut e) => {
                e.cache = self.name.clone();
                Err(e)
            }
        }
    }

    /// The free slow path of a cache with sheaves: the object is not
    /// allocated (a double free), or this CPU's main sheaf is full or
    /// missing. In turn: give the CPU its sheaves; swap in the spare if it
    /// has room; put the full main into the barn for an empty sheaf (one is
    /// allocated if the barn has none); flush main to the slabs when the
    /// barn is full. Decisions on the barn are taken under the list lock on
    /// state read afresh (see `alloc_from_sheaves`). If this CPU's sheaf
    /// lock is held, the object goes straight to its slab (checked there).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn free_slowpath(&self, s: *mut SlabHeader, addr: usize) {
        if self.sheaf_capacity == 0 {
            return self.free_to_slab(s, addr);
        }
        let idx = self.index_of(addr - s as usize - self.first_offset);
        let mut fresh = FreshSheaves::NONE;
        loop {
            let Some((pcs, g)) = self.lock_this_cpu() else {
                self.free_to_slab(s, addr);
                break;
            };
            // SAFETY: `s` is a live slab of this cache.
            let word = unsafe { (*s).allocated[idx / 64].load(Ordering::Relaxed) };
            let main = pcs.main.load(Ordering::Relaxed);
            let n = Sheaf::len(main);
            // SAFETY: this CPU's main sheaf holds n objects.
            let last = n != 0 && unsafe { *Sheaf::slot(main, n - 1) } == addr;
            if word & (1 << (idx % 64)) == 0 || last {
                drop(g);
                debug::report(
                    self,
                    SlabBug::DoubleFree,
                    addr,
                    None,
                    format_args!("Object already free"),
                );
                break;
            }
            if self.sheaf_push(pcs, addr) {
                break;
            }
            let g = match self.install_sheaves(pcs, g, &mut fresh) {
                Install::Ready(g) => g,
                Install::Retry => continue,
                Install::NoSheaves => {
                    self.free_to_slab(s, addr);
                    break;
                }
            };
            let main = pcs.main.load(Ordering::Relaxed);
            let spare = pcs.spare.load(Ordering::Relaxed);
            if Sheaf::len(spare) < self.sheaf_capacity {
                pcs.main.store(spare, Ordering::Relaxed);
                pcs.spare.store(main, Ordering::Relaxed);
                continue;
            }
            // Both full: the barn, or the slabs.
            let mut d = Discards::NONE;
            let mut df = DoubleFrees::NONE;
            let mut l = self.lists.lock();
            let main = pcs.main.load(Ordering::Relaxed);
            if Sheaf::len(main) < self.sheaf_capacity
                || Sheaf::len(pcs.spare.load(Ordering::Relaxed)) < self.sheaf_capacity
            {
                continue; // re-entered meanwhile: take it from the top
            }
            if l.nr_full < MAX_FULL_SHEAVES {
                let empty = if !l.barn_empty.is_null() {
                    let e = l.barn_empty;
                    // SAFETY: a sheaf on the barn's empty list, under the lock.
                    l.barn_empty = unsafe { (*e).next };
                    l.nr_empty -= 1;
                    e
                } else {
                    fresh.take().unwrap_or(ptr::null_mut())
                };
                if !empty.is_null() {
                    // SAFETY: `main` leaves this CPU for the barn, under the lock.
                    unsafe { (*main).next = l.barn_full };
                    l.barn_full = main;
                    l.nr_full += 1;
                    self.barn_full_hint.store(l.nr_full, Ordering::Relaxed);
                    l.barn_objs += Sheaf::len(main);
                    // SAFETY: an empty sheaf nobody else holds.
                    unsafe { (*empty).size.store(0, Ordering::Relaxed) };
                    pcs.main.store(empty, Ordering::Relaxed);
                    continue;
                }
                if !fresh.tried {
                    // No empty sheaf at hand: allocate one, without the locks.
                    drop(l);
                    drop(g);
                    fresh.tried = true;
                    fresh.sheaves[0] = self.alloc_sheaf();
                    continue;
                }
            }
            self.flush_sheaf_locked(&mut l, main, &mut d, &mut df);
            drop(l);
            drop(g);
            self.discard_all(d);
            df.report(self);
        }
        fresh.free();
    }

    /// `kmem_cache_alloc_bulk`: one object for every entry of `objs`, all or
    /// none. Fault injection and `might_alloc` run once for the call (as
    /// Linux's `slab_pre_alloc_hook`); objects come from this CPU's main
    /// sheaf as many at a time as it holds, the slow path refilling it.
    #[track_caller]
    fn alloc_bulk(&self, gfp: Gfp, objs: &mut [*mut u8]) -> Result<(), AllocError> {
        if crate::mm::fault_inject::FAILSLAB.armed() {
            self.failslab(gfp)?;
        }
        let gfp = crate::mm::fs_reclaim::might_alloc_gfp(gfp);
        let mut i = 0;
        while i < objs.len() {
            if self.sheaf_capacity != 0 {
                if let Some((pcs, _g)) = self.lock_this_cpu() {
                    let main = pcs.main.load(Ordering::Relaxed);
                    let n = Sheaf::len(main);
                    let k = n.min(objs.len() - i);
                    for (j, o) in objs[i..i + k].iter_mut().enumerate() {
                        // SAFETY: slots below the size of this CPU's main
                        // sheaf, under its sheaf lock.
                        *o = unsafe { *Sheaf::slot(main, n - 1 - j) } as *mut u8;
                    }
                    if k != 0 {
                        // SAFETY: as above.
                        unsafe { (*main).size.store(n - k, Ordering::Relaxed) };
                    }
                    i += k;
                }
                if i == objs.len() {
                    break;
                }
            }
            let r = if self.sheaf_capacity != 0 {
                self.alloc_from_sheaves(gfp)
            } else {
                self.alloc_from_slabs(gfp, self.object_size)
                    .map(|p| p.as_ptr() as usize)
            };
            match r {
                Ok(obj) => {
                    objs[i] = obj as *mut u8;
                    i += 1;
                }
                Err(e) => {
                    for &o in &objs[..i] {
                        self.free(o);
                    }
                    return Err(e);
                }
            }
        }
        if gfp.contains(Gfp::__GFP_ZERO) {
            for &o in objs.iter() {
                // SAFETY: objects of ours, just allocated.
                unsafe { ptr::write_bytes(o, 0, self.object_size) };
            }
        }
        Ok(())
    }

    /// Allocates and formats one slab, then puts it on the empty list.
    fn new_slab(&self, gfp: Gfp) -> Result<(), AllocError> {
        let pa = page_alloc::alloc_pages(gfp - Gfp::__GFP_ZERO, self.order)?;
        let base = page_alloc::page_address(pa) as usize;
        if !base.is_multiple_of(PAGE << self.order) {
            SLABS_ALIGNED.store(false, Ordering::Relaxed);
        }
        let delta = base.wrapping_sub(pa.as_u64() as usize);
        if let Err(d) =
            DIRECT_DELTA.compare_exchange(DELTA_UNSET, delta, Ordering::Relaxed, Ordering::Relaxed)
            && d != delta
        {
            DIRECT_DELTA.store(DELTA_NONE, Ordering::Relaxed);
            FAST_MAP_LEN.store(0, Ordering::Relaxed);
        } else if FAST_MAP_LEN.load(Ordering::Relaxed) == 0
            && DIRECT_DELTA.load(Ordering::Relaxed) == delta
        {
            fast_map_init(delta);
        }
        page_alloc::set_page_owner(pa, self.order, PageOwner::Slab(self.static_name()));
        for i in 0..(1usize << self.order) {
            let page = PhysAddr::new(pa.as_u64() + (i * PAGE) as u64);
            page_alloc::set_page_private(page, (base | self.slab_tag) as u64);
            page_alloc::set_page_slab_cache(page, self as *const CacheInner as *mut ());
        }
        if self.flags.contains(SlabFlags::POISON) {
            // Like SLUB: a new slab is filled with POISON_INUSE, so padding
            // between objects is recognisable in dumps.
            // SAFETY: fresh pages of our own.
            unsafe { ptr::write_bytes(base as *mut u8, debug::POISON_INUSE, PAGE << self.order) };
        }
        let s = base as *mut SlabHeader;
        // SAFETY: fresh pages of our own.
        unsafe {
            s.write(SlabHeader {
                magic: SLAB_MAGIC,
                objects: self.objects as u16,
                inuse: 0,
                cache: self,
                freelist: 0,
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                list: ListKind::None,
                order: self.order as u8,
                allocated: [const { AtomicU64::new(0) }; MAX_OBJECTS / 64],
            });
        }
        // SAFETY: `s` points at the header just written at the start of our fresh slab pages;
        // nothing else can reach it yet.
        let slab = unsafe { &mut *s };
        // Chain objects in address order: the first allocation takes the lowest.
        let mut next = 0usize;
        for i in (0..self.objects).rev() {
            let obj = self.obj_addr(slab, i);
            if let Some(ctor) = self.ctor {
                ctor(obj as *mut u8);
            }
            // SAFETY: slot `i` of the slab being set up: nobody else can
            // reach it until the slab is put on the lists.
            unsafe { debug::init_free_object(self, obj) };
            // SAFETY: slot `i` of the slab being set up, not published yet.
            unsafe { self.set_freepointer(obj, next) };
            next = obj;
        }
        slab.freelist = next;
        self.slabs_created.fetch_add(1, Ordering::Relaxed);
        let mut l = self.lists.lock();
        Self::push(&mut l, s, ListKind::Empty);
        Ok(())
    }

    /// The cache name for page-owner records (given as `&'static str`).
    fn static_name(&self) -> &'static str {
        self.static_name
    }

    /// `kmem_cache_free`: the object's slab and cache from its page's
    /// private word alone (the slab header is not read), then
    /// [`CacheInner::free_in_slab`]; anything else is reported.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn free(&self, p: *mut u8) {
        let addr = p as usize;
        // The slab base if the page is a slab of this cache; otherwise
        // low bits remain.
        let base = page_private_fast(addr) ^ self.slab_tag;
        if base & SLAB_PRIVATE_LOW == 0 {
            // Found through the fast map (a miss gives 0, which fails the
            // test).
            self.free_at::<true>(
                addr.wrapping_sub(base.wrapping_add(self.first_offset)),
                addr,
            );
        } else {
            self.free_slow_lookup(addr);
        }
    }

    /// [`CacheInner::free`] of a pointer the fast map does not show as a
    /// slab object of this cache: the general lookup, then the free, or the
    /// report of a pointer no slab of this cache owns.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn free_slow_lookup(&self, addr: usize) {
        let s = slab_of(addr);
        if let Some(s) = s
            // SAFETY: slab_of checked the magic: a live slab's header.
            && ptr::eq(unsafe { (*s).cache }, self)
        {
            return self.free_in_slab(s as usize, addr);
        }
        let Some(s) = s else {
            debug::report(
                self,
                SlabBug::NotASlabObject,
                addr,
                None,
                format_args!("Invalid pointer: no slab owns it"),
            );
            return;
        };
        // SAFETY: a live slab's cache pointer.
        let other = unsafe { &(*(*s).cache).name };
        debug::report(
            self,
            SlabBug::WrongCache,
            addr,
            None,
            format_args!(
                "Wrong slab cache. {} but object is from {}",
                self.name, other
            ),
        );
    }

    /// Frees `addr`, known to be in the slab at `s` of this cache (from its
    /// page's private word). The fast path: the address checked to be an
    /// object boundary, this CPU's sheaf lock tried, the object pushed onto
    /// the main sheaf unless it is the object freed last (SLUB's naive
    /// double-free check), the lock released. The slab header is not read:
    /// as in SLUB, a double free of an object that is not the last one freed
    /// is found when its sheaf is flushed (the slab's allocation bitmap
    /// shows it free), or at once by a debug cache, which has no sheaves.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn free_in_slab(&self, s: usize, addr: usize) {
        self.free_at::<false>(addr.wrapping_sub(s.wrapping_add(self.first_offset)), addr);
    }

    /// [`CacheInner::free_in_slab`] with the offset `rel` of `addr` from
    /// its slab's first object (wrapping: an address before the first
    /// object gives a huge offset), which each caller computes from what
    /// it has at hand (kfree from the page's private word and
    /// `private_bias`, without masking the word).
    ///
    /// `MAPPED`: the caller found the object's page in the fast mem_map
    /// copy, which is only set up once the CPU number can be read with
    /// [`crate::platform::cpu_line_offset_fast`] (see [`fast_map_init`]).
    #[track_caller]
    #[inline(always)]
    pub(crate) fn free_at<const MAPPED: bool>(&self, rel: usize, addr: usize) {
        // One range check (below the objects' span, at most 32 KiB, the
        // divisibility test is exact).
        if rel >= self.span || (rel as u64).wrapping_mul(self.div_magic) >= self.div_magic {
            self.report_bad_offset(addr);
            return;
        }
        // A debug cache's CPUs have no main sheaf: the push fails.
        let pushed = if MAPPED {
            // SAFETY: the fast map is only filled when the CPU number can
            // be read there (`fast_map_init`).
            unsafe { self.push_fast(addr) }
        } else {
            self.push_this_cpu(addr)
        };
        if pushed {
            return;
        }
        let s = addr.wrapping_sub(rel).wrapping_sub(self.first_offset);
        self.free_slowpath(s as *mut SlabHeader, addr);
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn report_bad_offset(&self, addr: usize) {
        debug::report(
            self,
            SlabBug::BadOffset,
            addr,
            None,
            format_args!("Invalid object pointer {addr:#x}: not at an object boundary"),
        );
    }

    /// Frees `addr`, an object boundary in slab `s` of this cache, straight
    /// to the slab under the list lock, with the debug checks: double free
    /// (the bitmap), red zones, poisoning.
    #[track_caller]
    fn free_to_slab(&self, s: *mut SlabHeader, addr: usize) {
        let idx = self.index_of(addr - s as usize - self.first_offset);
        // SAFETY: `s` is a live slab of this cache; its fields change under the list lock, taken below.
        let slab = unsafe { &mut *s };
        let mut to_free: Option<*mut SlabHeader> = None;
        let mut redzone_bad = None;
        {
            let mut l = self.lists.lock();
            let w = &slab.allocated[idx / 64];
            if w.load(Ordering::Relaxed) & (1 << (idx % 64)) == 0 {
                drop(l);
                debug::report(
                    self,
                    SlabBug::DoubleFree,
                    addr,
                    None,
                    format_args!("Object already free"),
                );
                return;
            }
            if self
                .flags
                .intersects(SlabFlags::POISON | SlabFlags::RED_ZONE)
            {
                // SAFETY: `addr` is an allocated object of this slab (checked
                // above: boundary and bitmap), freed by its owner, and the
                // list lock is held.
                redzone_bad = unsafe { debug::check_and_poison_on_free(self, addr) };
            }
            // SAFETY: the object is being freed into its own slab, under the
            // list lock.
            unsafe { self.set_freepointer(addr, slab.freelist) };
            slab.freelist = addr;
            let w = &slab.allocated[idx / 64];
            w.store(
                w.load(Ordering::Relaxed) & !(1 << (idx % 64)),
                Ordering::Relaxed,
            );
            slab.inuse -= 1;
            l.active_objs -= 1;
            // Linux's `__slab_free`: the slab counts among the node's partial
            // slabs if it was one (not if it was full).
            let nr_partial = l.partial.len + l.empty.len;
            Self::place(&mut l, s);
            if slab.inuse == 0 && nr_partial >= self.min_partial {
                Self::unlink(&mut l, s);
                to_free = Some(s);
            }
        }
        // Reported without the list lock: a report allocates (the cache
        // name, the record), possibly from this very cache (kmalloc-16
        // under slab_debug=Z), which would spin on the lock held above.
        if let Some(off) = redzone_bad {
            // A negative offset: before the object, in its left red zone.
            let at = usize::try_from(off).ok();
            debug::report(
                self,
                SlabBug::RedzoneOverwritten,
                addr,
                at,
                match at {
                    None => format_args!("Left Redzone overwritten"),
                    Some(o) if o < self.object_size => format_args!("kmalloc Redzone overwritten"),
                    Some(_) => format_args!("Right Redzone overwritten"),
                },
            );
        }
        if let Some(s) = to_free {
            self.discard_slab(s);
        }
    }

    fn discard_slab(&self, s: *mut SlabHeader) {
        // SAFETY: an unlinked, empty slab of this cache.
        unsafe { (*s).magic = 0 };
        let pa = page_alloc::virt_to_phys(s as *const u8);
        for i in 0..(1usize << self.order) {
            let page = PhysAddr::new(pa.as_u64() + (i * PAGE) as u64);
            page_alloc::set_page_private(page, 0);
            page_alloc::set_page_slab_cache(page, ptr::null_mut());
        }
        page_alloc::free_pages(pa, self.order);
        self.slabs_freed.fetch_add(1, Ordering::Relaxed);
    }

    /// Releases empty slabs down to `keep`; returns pages released.
    pub(crate) fn release_empty(&self, keep: usize) -> usize {
        let mut pages = 0;
        loop {
            let s = {
                let mut l = self.lists.lock();
                if l.empty.len <= keep || l.empty.head.is_null() {
                    break;
                }
                let s = l.empty.head;
                Self::unlink(&mut l, s);
                s
            };
            self.discard_slab(s);
            pages += 1 << self.order;
        }
        pages
    }

    pub(crate) fn info(&self) -> SlabInfo {
        // Copy the numbers under the lock; allocate (the name) outside it:
        // the allocation may come from this very cache.
        let mut info = self.counts();
        info.name = self.name.clone();
        info
    }

    /// The slabinfo numbers without the name: never allocates, so OOM
    /// reports can use it.
    fn counts(&self) -> SlabInfo {
        let l = self.lists.lock();
        let num_slabs = l.partial.len + l.full.len + l.empty.len;
        // Objects in sheaves are free for callers, though taken from their
        // slabs (the list split shows the slabs where they sit until the
        // sheaves are flushed): counted apart. Other CPUs' sheaves are a
        // snapshot, so the difference saturates.
        let sheaf_objs = l.barn_objs + self.cpu_sheaf_objs();
        SlabInfo {
            name: String::new(),
            active_objs: l.active_objs.saturating_sub(sheaf_objs),
            sheaf_objs,
            sheaf_capacity: self.sheaf_capacity,
            barn_full: l.nr_full,
            barn_empty: l.nr_empty,
            num_objs: num_slabs * self.objects,
            objsize: self.size,
            objperslab: self.objects,
            pagesperslab: 1 << self.order,
            active_slabs: l.partial.len + l.full.len,
            num_slabs,
            partial_slabs: l.partial.len,
            full_slabs: l.full.len,
            empty_slabs: l.empty.len,
            reclaimable: self.flags.contains(SlabFlags::RECLAIM_ACCOUNT),
        }
    }
}

/// `kmem_cache_alloc_bulk(cache, gfp, objs)`: see [`KmemCache::alloc_bulk`].
#[track_caller]
pub fn kmem_cache_alloc_bulk(
    cache: &KmemCache,
    gfp: Gfp,
    objs: &mut [*mut u8],
) -> Result<(), AllocError> {
    cache.alloc_bulk(gfp, objs)
}

/// `kmem_cache_free_bulk(cache, objs)`: see [`KmemCache::free_bulk`].
///
/// # Safety
/// As for [`KmemCache::free`], for each object.
#[track_caller]
pub unsafe fn kmem_cache_free_bulk(cache: &KmemCache, objs: &[*mut u8]) {
    // SAFETY: the caller's contract.
    unsafe { cache.free_bulk(objs) }
}

/// Flushes every cache's sheaves, every CPU's and the barns' (see
/// [`KmemCache::flush_sheaves`]), and returns the pages of empty slabs
/// released: reclaim calls it before it gives up (Linux drains per-CPU
/// caches before an OOM), so that memory cached in sheaves is never what
/// makes an allocation fail.
pub fn flush_all_sheaves() -> usize {
    let mut pages = 0;
    for i in 0..MAX_CACHES {
        // Each cache is pinned under the registry lock and drained after it
        // is dropped: a drain may wait (yield) for a CPU's sheaf lock, which
        // a spinlock must not span. Destroy, having unregistered a cache,
        // waits for its pins before it frees the sheaves. Caches with
        // nothing cached are skipped without their list locks (reclaim
        // calls this on every pass that reaches priority 0).
        let pinned = {
            let reg = CACHES.lock();
            let p = reg.0[i];
            // SAFETY: registered caches are alive while registered.
            match unsafe { p.as_ref() } {
                Some(c)
                    if c.cpu_sheaf_objs() != 0 || c.barn_full_hint.load(Ordering::Relaxed) != 0 =>
                {
                    c.pins.fetch_add(1, Ordering::Relaxed);
                    p
                }
                _ => continue,
            }
        };
        // SAFETY: pinned above; destroy frees nothing of it while pinned.
        let c = unsafe { &*pinned };
        pages += c.flush_sheaves().1;
        c.pins.fetch_sub(1, Ordering::Release);
    }
    pages
}

/// Turns the allocation fast path back on (`platform::SLAB_ALLOC_FAST`) if
/// nothing forbids it any more: lockdep off, failslab not armed, a native
/// interrupt flag. Whoever forbids it clears the flag (a sequentially
/// consistent store) after changing its own state, and this re-reads that
/// state after setting the flag the same way, so a concurrent change is not
/// lost.
fn refresh_alloc_fast() {
    use crate::platform::SLAB_ALLOC_FAST;
    let allowed = || {
        crate::platform::irq_flag_native()
            && crate::platform::cpu_line_offset_ready()
            && crate::sync::lockdep::mode() == crate::sync::lockdep::LockdepMode::Off
            && !crate::mm::fault_inject::FAILSLAB.armed()
    };
    if SLAB_ALLOC_FAST.load(Ordering::Relaxed) || !allowed() {
        return;
    }
    SLAB_ALLOC_FAST.store(true, Ordering::SeqCst);
    if !allowed() {
        SLAB_ALLOC_FAST.store(false, Ordering::SeqCst);
    }
}

/// Linux's `should_failslab`: never __GFP_NOFAIL, and not allocations that
/// may enter direct reclaim when `ignore-gfp-wait` is set.
fn should_failslab(gfp: Gfp, size: usize) -> bool {
    use crate::mm::fault_inject::{FAILSLAB, should_fail};
    if gfp.contains(Gfp::__GFP_NOFAIL) {
        return false;
    }
    if FAILSLAB.ignore_gfp_reclaim() && gfp.contains(Gfp::__GFP_DIRECT_RECLAIM) {
        return false;
    }
    should_fail(&FAILSLAB, size)
}

/// `virtual - physical` address of every slab so far (the platform's direct
/// map offset), so that `slab_of` finds a pointer's page without a call
/// through the platform; [`DELTA_UNSET`] before the first slab, and
/// [`DELTA_NONE`] for good once two slabs disagree. Page-aligned when valid.
static DIRECT_DELTA: AtomicUsize = AtomicUsize::new(DELTA_UNSET);
const DELTA_UNSET: usize = 1;
const DELTA_NONE: usize = 3;

/// The mem_map as the free fast path reads it: entry `i` describes the
/// direct-map page `FAST_MAP_VPFN + i` (virtual page number), for `i` below
/// `FAST_MAP_LEN`. Set with the first slab, from the zone (whose mem_map
/// never moves) and [`DIRECT_DELTA`]; `FAST_MAP_LEN` stays 0 (every lookup
/// misses and takes the general path) until then, and for good once slabs
/// disagree on the direct map's offset.
// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
static FAST_MAP: AtomicPtr<crate::mm::page::Page> = AtomicPtr::new(ptr::null_mut());
// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
static FAST_MAP_VPFN: AtomicUsize = AtomicUsize::new(0);
// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
static FAST_MAP_LEN: AtomicUsize = AtomicUsize::new(0);

/// Fills the fast map (see [`FAST_MAP`]) for direct-map offset `delta`.
///
/// Not before the CPU number can be read with
/// [`crate::platform::cpu_line_offset_fast`]: a hit in the map lets the free fast
/// paths read it so (until then every new slab tries again).
fn fast_map_init(delta: usize) {
    if !crate::platform::cpu_line_offset_ready() {
        return;
    }
    let z = &crate::mm::zone::ZONE;
    let map = z.mem_map.load(Ordering::Acquire);
    if map.is_null() || delta & (PAGE - 1) != 0 {
        return;
    }
    let start = z.start_pfn.load(Ordering::Relaxed) as usize;
    let vpfn = start.wrapping_add(delta >> crate::mm::page::PAGE_SHIFT);
    FAST_MAP.store(map, Ordering::Relaxed);
    FAST_MAP_VPFN.store(vpfn, Ordering::Relaxed);
    FAST_MAP_LEN.store(
        z.spanned.load(Ordering::Relaxed) as usize,
        Ordering::Release,
    );
}

/// The `struct page` of direct-map address `addr` through the fast map, if
/// the map covers it (otherwise the caller takes its general path, which
/// knows every page). Inline in each fast path's own test (no `Option` to
/// test again in the dev build).
macro_rules! page_fast {
    ($addr:expr, |$page:ident| $found:expr, $missed:expr) => {{
        let i = ($addr >> crate::mm::page::PAGE_SHIFT)
            .wrapping_sub(FAST_MAP_VPFN.load(Ordering::Relaxed));
        if i < FAST_MAP_LEN.load(Ordering::Acquire) {
            let p = FAST_MAP.load(Ordering::Relaxed).wrapping_add(i);
            // SAFETY: entry `i` of the mem_map (i below its length), which
            // lives for ever. A transmute rather than `&*`: the dev build
            // checks the alignment of every raw dereference, which the free
            // fast paths would pay on each free.
            #[allow(clippy::transmute_ptr_to_ref)]
            let $page = unsafe {
                core::mem::transmute::<*mut crate::mm::page::Page, &crate::mm::page::Page>(p)
            };
            $found
        } else {
            $missed
        }
    }};
}

/// The private word of the page holding direct-map address `addr`, through
/// the fast map: 0 if the map does not cover it (then the caller asks
/// [`page_private_of`], which knows every page).
#[inline(always)]
fn page_private_fast(addr: usize) -> usize {
    page_fast!(addr, |page| page.private(), 0)
}

/// The private word of the page holding `addr` (0 outside the page
/// allocator's span): for a slab page, `slab base | SLAB_PRIVATE_TAG | the
/// cache's registry slot`.
fn page_private_of(addr: usize) -> usize {
    let delta = DIRECT_DELTA.load(Ordering::Relaxed);
    let pa = if delta & 1 == 0 {
        // Any pointer into a slab is a direct-map address: `addr - delta`.
        // Any other maps to a frame outside the zone or not a slab's.
        PhysAddr::new(addr.wrapping_sub(delta) as u64)
    } else {
        page_alloc::virt_to_phys(addr as *const u8)
    };
    match page_alloc::page_private(pa) {
        Some(v) => v as usize,
        None => 0,
    }
}

/// kfree's fast path: if `addr` is in a slab page the fast map covers, frees
/// it in its cache ([`CacheInner::free_in_slab`]: boundary check, this
/// CPU's sheaf) and says `true`; `false` sends the caller to its general
/// path (large kmalloc, NULL, foreign pointers, reports). The cache comes
/// from the page's `slab_cache` word and the slab's base from its private
/// word: two loads from the same `struct page` that do not wait for each
/// other (Linux's `virt_to_slab(x)->slab_cache`), where following the
/// private word's registry slot to [`CACHE_BY_ID`] made the rest of the
/// free wait for two loads in a row.
#[inline(always)]
pub(crate) fn kfree_slab(addr: usize) -> bool {
    page_fast!(
        addr,
        |page| {
            let c = page.slab_cache();
            let v = page.private();
            // SAFETY: null or the cache whose slab this page is: set on
            // each of a slab's pages before the slab is used, cleared
            // before they are freed (and by the page allocator on every
            // free and allocation), and a cache outlives its slabs. A
            // transmute rather than `&*` (no dev-build alignment check).
            let c = unsafe { core::mem::transmute::<*mut (), Option<&'static CacheInner>>(c) };
            match c {
                Some(c) => {
                    // The private word is `base | c.slab_tag`: the offset
                    // from the first object without masking it.
                    c.free_at::<true>(addr.wrapping_sub(v).wrapping_add(c.private_bias), addr);
                    true
                }
                None => false,
            }
        },
        false
    )
}

/// The slab holding `addr`, through the page's private word, its header's
/// magic checked.
pub(crate) fn slab_of(addr: usize) -> Option<*mut SlabHeader> {
    let v = page_private_of(addr);
    if v & SLAB_PRIVATE_TAG == 0 {
        return None;
    }
    let base = v & !SLAB_PRIVATE_LOW;
    // Slab addresses are direct-map addresses; small values are other tags.
    if base < 0x1_0000 {
        return None;
    }
    let s = base as *mut SlabHeader;
    // SAFETY: only slab pages carry the tag, with their slab's base.
    if unsafe { (*s).magic } != SLAB_MAGIC {
        return None;
    }
    Some(s)
}

/// slabinfo rows of every cache.
pub fn slabinfo() -> alloc::vec::Vec<SlabInfo> {
    let mut out = alloc::vec::Vec::new();
    for i in 0..MAX_CACHES {
        let counts = {
            let reg = CACHES.lock();
            let p = reg.0[i];
            // SAFETY: registered caches are alive while registered.
            (!p.is_null()).then(|| unsafe { ((*p).counts(), (*p).name.clone()) })
        };
        if let Some((mut info, name)) = counts {
            info.name = name;
            out.push(info);
        }
    }
    out
}

/// [`slabinfo`] that reports failure as a value (`try_reserve`).
pub fn try_slabinfo() -> Result<alloc::vec::Vec<SlabInfo>, crate::mm::page_alloc::AllocError> {
    use crate::mm::fallible::try_string;
    let nomem = crate::mm::fallible::global_alloc_error;
    let mut out = alloc::vec::Vec::new();
    for i in 0..MAX_CACHES {
        let counts = {
            let reg = CACHES.lock();
            let p = reg.0[i];
            // SAFETY: registered caches are alive while registered.
            (!p.is_null()).then(|| unsafe { ((*p).counts(), try_string(&(*p).name)) })
        };
        if let Some((mut info, name)) = counts {
            info.name = name?;
            out.try_reserve(1).map_err(|_| nomem())?;
            out.push(info);
        }
    }
    Ok(out)
}

/// Prints /proc/slabinfo, version 2.1 columns. Allocates nothing, so the
/// out-of-memory report can call it. That report may come from an
/// allocation made under the cache registry's lock (one CPU: a held lock is
/// ours), so the registry is only tried, never waited for.
pub fn show_slabinfo() {
    struct Console;
    impl fmt::Write for Console {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            crate::print!("{s}");
            Ok(())
        }
    }
    let _ = slabinfo_header(&mut Console);
    match CACHES.try_lock() {
        Some(reg) => {
            let _ = slabinfo_rows(&mut Console, &reg);
        }
        None => crate::println!("(slab cache registry busy: rows skipped)"),
    }
}

/// Writes /proc/slabinfo (version 2.1 columns) to `w`: [`show_slabinfo`]
/// with a destination, so the text can be checked. `w` is called with the
/// cache registry locked (interrupts masked).
pub fn write_slabinfo(w: &mut dyn fmt::Write) -> fmt::Result {
    slabinfo_header(w)?;
    slabinfo_rows(w, &CACHES.lock())
}

/// The slabinfo v2.1 header lines.
pub fn slabinfo_header(w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(w, "slabinfo - version: 2.1")?;
    writeln!(
        w,
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>"
    )
}

fn slabinfo_rows(w: &mut dyn fmt::Write, reg: &Registry) -> fmt::Result {
    for &p in reg.0.iter().filter(|p| !p.is_null()) {
        // SAFETY: registered caches are alive while registered.
        let c = unsafe { &*p };
        slabinfo_row(w, &c.name, &c.counts())?;
    }
    Ok(())
}

/// One slabinfo v2.1 line for cache `name` (tunables and shared counts are
/// SLAB's; SLUB, and kreclaim, print zeros).
pub fn slabinfo_row(w: &mut dyn fmt::Write, name: &str, s: &SlabInfo) -> fmt::Result {
    writeln!(
        w,
        "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
        name,
        s.active_objs,
        s.num_objs,
        s.objsize,
        s.objperslab,
        s.pagesperslab,
        0,
        0,
        0,
        s.active_slabs,
        s.num_slabs,
        0
    )
}

/// The addresses of the data the slab and kmalloc fast paths read on every
/// operation, by name (for the layout check that they lie in the kernel's
/// fast-path data section, `arch::x86_64::hot_data_range`).
pub fn fast_path_data() -> [(&'static str, usize); 7] {
    [
        (
            "SLAB_ALLOC_FAST",
            &raw const crate::platform::SLAB_ALLOC_FAST as usize,
        ),
        (
            "PAGE_ALLOC_FAST",
            &raw const crate::platform::PAGE_ALLOC_FAST as usize,
        ),
        ("FAST_MAP", &raw const FAST_MAP as usize),
        ("FAST_MAP_VPFN", &raw const FAST_MAP_VPFN as usize),
        ("FAST_MAP_LEN", &raw const FAST_MAP_LEN as usize),
        ("NO_SHEAF", &raw const NO_SHEAF as usize),
        ("kmalloc SMALL_CLASS", super::kmalloc::small_class_table()),
    ]
}
