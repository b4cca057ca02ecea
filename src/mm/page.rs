//! Physical addresses and the per-page metadata (`struct page`).
//!
//! Every page frame the page allocator spans has one [`Page`] in the
//! `mem_map` array, which is carved out of the managed RAM itself at init
//! (like Linux's mem_map), so the allocator never needs the Rust heap.
//!
//! Metadata describes blocks, not single pages: only the first page of a free
//! block (flag [`PageFlags::BUDDY`]) or of an allocated block
//! ([`PageFlags::HEAD`]) carries flags, order and owner; the other pages of
//! the block are plain tails. Everything except `private` is changed under
//! the zone lock, or, for a block on a per-CPU page list and one going to or
//! coming from it, under that CPU's `pcp->lock`; a free claims the HEAD flag atomically.

use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicUsize, Ordering};

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// Page size in bytes (4 KiB).
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// A physical address. Not a pointer: reach the memory with [`page_address`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The physical address `pa`.
    pub const fn new(pa: u64) -> Self {
        Self(pa)
    }

    /// The address as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Page frame number.
    pub const fn pfn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }

    /// The address of page frame `pfn`.
    pub const fn from_pfn(pfn: u64) -> Self {
        Self(pfn << PAGE_SHIFT)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Kernel virtual address of `pa` through the platform's direct map.
#[inline]
pub fn page_address(pa: PhysAddr) -> *mut u8 {
    match crate::platform::get() {
        Some(p) => p.phys_to_virt(pa.as_u64()),
        None => pa.as_u64() as *mut u8,
    }
}

/// Physical address behind a direct-map (or identity-mapped) pointer.
#[inline]
pub fn virt_to_phys(va: *const u8) -> PhysAddr {
    PhysAddr(match crate::platform::get() {
        Some(p) => p.virt_to_phys(va),
        None => va as u64,
    })
}

bitflags::bitflags! {
    /// Page flags (a subset of Linux's `PG_*`, plus [`PageFlags::HEAD`] with
    /// a wider meaning, see there).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct PageFlags: u32 {
        /// First page of a free block on a buddy free list (`PageBuddy`).
        const BUDDY = 1 << 0;
        /// Never given to the allocator: a hole, firmware, or the mem_map.
        const RESERVED = 1 << 1;
        /// Backs a slab (set with [`PageOwner::Slab`]).
        const SLAB = 1 << 2;
        /// First page of an allocated block. Linux sets PG_head only for
        /// `__GFP_COMP` compound pages; kreclaim marks every allocated block
        /// so that `free_pages` can check the address and order it is given.
        const HEAD = 1 << 3;
        /// First page of a free block on a CPU's per-CPU page list (kreclaim's
        /// marker; Linux leaves pcp pages unmarked). Such a block is free but
        /// not in NR_FREE_PAGES; freeing it again is a double free.
        const PCP = 1 << 4;
    }
}

/// Who holds an allocated block (a cheap page_owner, printable in reports).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageOwner {
    /// On a free list.
    Free,
    /// Never managed: a hole in the memory map, or the mem_map itself.
    Reserved,
    /// `alloc_pages` default.
    Kernel,
    /// A slab of the named cache.
    Slab(&'static str),
    /// A page-table page.
    PageTable,
    /// A kernel-thread stack.
    Stack,
    /// Anything else, named by its allocator.
    Other(&'static str),
}

impl fmt::Display for PageOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Free => f.write_str("free"),
            Self::Reserved => f.write_str("reserved"),
            Self::Kernel => f.write_str("kernel"),
            Self::Slab(name) => write!(f, "slab '{name}'"),
            Self::PageTable => f.write_str("page table"),
            Self::Stack => f.write_str("stack"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

const OWNER_FREE: u8 = 0;
const OWNER_RESERVED: u8 = 1;
const OWNER_KERNEL: u8 = 2;
const OWNER_SLAB: u8 = 3;
const OWNER_PAGE_TABLE: u8 = 4;
const OWNER_STACK: u8 = 5;
const OWNER_OTHER: u8 = 6;

/// Marks "no page" in the free-list links.
pub(crate) const NIL: u32 = u32::MAX;

/// Metadata of one page frame (Linux's `struct page`), 40 bytes.
#[repr(C)]
pub struct Page {
    flags: AtomicU32,
    order: AtomicU8,
    owner_kind: AtomicU8,
    /// Bytes of the owner's name (names are cut to 65,535 bytes).
    owner_len: AtomicU16,
    /// Free-list links: mem_map indices, [`NIL`] at the ends.
    next: AtomicU32,
    prev: AtomicU32,
    /// The slab cache whose slab this page is part of (Linux's
    /// `slab->slab_cache`, which lives in the page's own words), untyped
    /// (the slab layer's `CacheInner`); null for every page that is not a slab's. Set on every page of
    /// a slab before the slab is used and cleared before its pages go back
    /// to the page allocator, which clears it again on every free and
    /// allocation of a block: `kfree` reads it next to the private word
    /// (two loads that do not wait for each other) instead of following the
    /// private word to a table of caches.
    slab_cache: AtomicPtr<()>,
    owner_name: AtomicPtr<u8>,
    /// For the block's user (Linux's `page->private`), e.g. the slab layer.
    private: AtomicUsize,
}

// The mem_map costs 1% of RAM; keep it that way.
const _: () = assert!(core::mem::size_of::<Page>() == 40);

impl Page {
    pub(crate) const fn reserved() -> Self {
        Self {
            flags: AtomicU32::new(PageFlags::RESERVED.bits()),
            order: AtomicU8::new(0),
            owner_kind: AtomicU8::new(OWNER_RESERVED),
            owner_len: AtomicU16::new(0),
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
            slab_cache: AtomicPtr::new(core::ptr::null_mut()),
            owner_name: AtomicPtr::new(core::ptr::null_mut()),
            private: AtomicUsize::new(0),
        }
    }

    /// Flags (a lockless snapshot).
    pub fn flags(&self) -> PageFlags {
        PageFlags::from_bits_retain(self.flags.load(Ordering::Relaxed))
    }

    /// Block order of a BUDDY or HEAD page (a lockless snapshot).
    pub fn order(&self) -> u32 {
        self.order.load(Ordering::Relaxed) as u32
    }

    /// The owner's word (Linux's `page->private`).
    #[inline]
    pub fn private(&self) -> usize {
        self.private.load(Ordering::Relaxed)
    }

    /// Sets the owner's word.
    pub fn set_private(&self, v: usize) {
        self.private.store(v, Ordering::Relaxed);
    }

    /// The slab cache this page is a slab page of, null if it is not a
    /// slab's (see the field).
    #[inline(always)]
    pub fn slab_cache(&self) -> *mut () {
        self.slab_cache.load(Ordering::Relaxed)
    }

    /// Sets (or, with null, clears) the page's slab cache.
    pub fn set_slab_cache(&self, c: *mut ()) {
        self.slab_cache.store(c, Ordering::Relaxed);
    }

    pub(crate) fn set_flags(&self, f: PageFlags) {
        self.flags.store(f.bits(), Ordering::Relaxed);
    }

    /// Atomically replaces flags `old` with `new`: whoever frees a block
    /// claims its HEAD this way, so that two racing frees of one block cannot
    /// both put it on a free list (one of them sees the flags changed).
    pub(crate) fn claim(&self, old: PageFlags, new: PageFlags) -> bool {
        self.flags
            .compare_exchange(old.bits(), new.bits(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Sets an owner that has no name ([`PageOwner::Kernel`],
    /// [`PageOwner::Free`]) with one store, so that it needs neither lock: a
    /// reader under the zone lock sees the old kind or the new one, and never
    /// a name pointer and length from different owners.
    pub(crate) fn set_owner_unnamed(&self, owner: PageOwner) {
        let kind = match owner {
            PageOwner::Free => OWNER_FREE,
            PageOwner::Kernel => OWNER_KERNEL,
            PageOwner::PageTable => OWNER_PAGE_TABLE,
            PageOwner::Stack => OWNER_STACK,
            PageOwner::Reserved => OWNER_RESERVED,
            PageOwner::Slab(_) | PageOwner::Other(_) => {
                debug_assert!(false, "set_owner_unnamed({owner}) has a name");
                return;
            }
        };
        self.owner_kind.store(kind, Ordering::Release);
    }

    pub(crate) fn set_order(&self, order: u32) {
        self.order.store(order as u8, Ordering::Relaxed);
    }

    pub(crate) fn next(&self) -> u32 {
        self.next.load(Ordering::Relaxed)
    }

    pub(crate) fn prev(&self) -> u32 {
        self.prev.load(Ordering::Relaxed)
    }

    pub(crate) fn set_next(&self, v: u32) {
        self.next.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_prev(&self, v: u32) {
        self.prev.store(v, Ordering::Relaxed);
    }

    /// The owner. Read under the zone lock: the three fields are not
    /// updated atomically together.
    pub(crate) fn owner_locked(&self) -> PageOwner {
        let name = || {
            let p = self.owner_name.load(Ordering::Relaxed);
            let len = self.owner_len.load(Ordering::Relaxed) as usize;
            if p.is_null() {
                return "?";
            }
            // SAFETY: stored from a `&'static str` by set_owner_locked.
            unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(p, len)) }
        };
        match self.owner_kind.load(Ordering::Relaxed) {
            OWNER_FREE => PageOwner::Free,
            OWNER_RESERVED => PageOwner::Reserved,
            OWNER_KERNEL => PageOwner::Kernel,
            OWNER_SLAB => PageOwner::Slab(name()),
            OWNER_PAGE_TABLE => PageOwner::PageTable,
            OWNER_STACK => PageOwner::Stack,
            _ => PageOwner::Other(name()),
        }
    }

    /// Sets the owner; under the zone lock.
    pub(crate) fn set_owner_locked(&self, owner: PageOwner) {
        let (kind, name): (u8, &'static str) = match owner {
            PageOwner::Free => (OWNER_FREE, ""),
            PageOwner::Reserved => (OWNER_RESERVED, ""),
            PageOwner::Kernel => (OWNER_KERNEL, ""),
            PageOwner::Slab(n) => (OWNER_SLAB, n),
            PageOwner::PageTable => (OWNER_PAGE_TABLE, ""),
            PageOwner::Stack => (OWNER_STACK, ""),
            PageOwner::Other(n) => (OWNER_OTHER, n),
        };
        // A name longer than the length field holds is cut at a character
        // boundary.
        let mut len = name.len().min(u16::MAX as usize);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        self.owner_kind.store(kind, Ordering::Relaxed);
        self.owner_name
            .store(name.as_ptr() as *mut u8, Ordering::Relaxed);
        self.owner_len.store(len as u16, Ordering::Relaxed);
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Page {{ flags: {:?}, order: {} }}",
            self.flags(),
            self.order()
        )
    }
}
