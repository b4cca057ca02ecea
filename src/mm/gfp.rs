//! GFP ("get free pages") flags with Linux's bit values
//! (`include/linux/gfp_types.h`) and composites, printable by name.

use core::fmt;

bitflags::bitflags! {
    /// Allocation flags: what the allocator may do to satisfy a request.
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Gfp: u32 {
        /// DMA zone (kreclaim has one zone; accepted and ignored).
        const __GFP_DMA = 0x01;
        /// Highmem zone (none on x86_64; ignored).
        const __GFP_HIGHMEM = 0x02;
        /// DMA32 zone (kreclaim has one zone; ignored).
        const __GFP_DMA32 = 0x04;
        /// Movable page; a PIN scope clears it (`current_gfp_context`).
        const __GFP_MOVABLE = 0x08;
        /// Reclaimable page (Linux's mobility grouping; ignored).
        const __GFP_RECLAIMABLE = 0x10;
        /// May use part of the min reserve.
        const __GFP_HIGH = 0x20;
        /// Reclaim may start physical IO.
        const __GFP_IO = 0x40;
        /// Reclaim may call into the filesystem.
        const __GFP_FS = 0x80;
        /// Return zeroed memory.
        const __GFP_ZERO = 0x100;
        /// The caller may sleep in direct reclaim.
        const __GFP_DIRECT_RECLAIM = 0x400;
        /// Wake kswapd at the low watermark.
        const __GFP_KSWAPD_RECLAIM = 0x800;
        /// Page cache write (Linux's dirty throttling; ignored).
        const __GFP_WRITE = 0x1000;
        /// Do not print the allocation-failure report.
        const __GFP_NOWARN = 0x2000;
        /// Retry while reclaim makes progress, even for costly orders, then fail.
        const __GFP_RETRY_MAYFAIL = 0x4000;
        /// Never fail: retry (sleeping between rounds) until memory is found.
        const __GFP_NOFAIL = 0x8000;
        /// Fail after one round of direct reclaim.
        const __GFP_NORETRY = 0x10000;
        /// May ignore the watermarks (use the reserves), like PF_MEMALLOC.
        const __GFP_MEMALLOC = 0x20000;
        /// Compound page (kreclaim marks every allocated block as one).
        const __GFP_COMP = 0x40000;
        /// Never use the reserves, overriding PF_MEMALLOC and __GFP_MEMALLOC.
        const __GFP_NOMEMALLOC = 0x80000;
        /// Cpuset hardwall (no cpusets here; ignored).
        const __GFP_HARDWALL = 0x100000;
        /// NUMA node binding (one node here; ignored).
        const __GFP_THISNODE = 0x200000;
        /// Memcg accounting (no memcg here; ignored).
        const __GFP_ACCOUNT = 0x400000;
        /// Memory tagging (ignored).
        const __GFP_ZEROTAGS = 0x800000;
        /// No fs_reclaim lockdep tracking for this allocation.
        const __GFP_NOLOCKDEP = 0x4000000;

        /// Both reclaim bits: may sleep in direct reclaim and wakes kswapd.
        const __GFP_RECLAIM = Self::__GFP_DIRECT_RECLAIM.bits() | Self::__GFP_KSWAPD_RECLAIM.bits();
        /// Cannot sleep (interrupts, spinlocks); __GFP_HIGH lets it dip deeper
        /// into the reserves.
        const GFP_ATOMIC = Self::__GFP_HIGH.bits() | Self::__GFP_KSWAPD_RECLAIM.bits();
        /// Normal kernel allocation: may sleep, do IO and call the filesystem.
        const GFP_KERNEL = Self::__GFP_RECLAIM.bits() | Self::__GFP_IO.bits() | Self::__GFP_FS.bits();
        /// GFP_KERNEL charged to memcg (accounting is ignored here).
        const GFP_KERNEL_ACCOUNT = Self::GFP_KERNEL.bits() | Self::__GFP_ACCOUNT.bits();
        /// Cannot sleep: wakes kswapd but never reclaims directly. Includes
        /// __GFP_NOWARN, as newer Linux trees define it (2025): a caller of a non-blocking
        /// allocation expects it to fail and has a fallback.
        const GFP_NOWAIT = Self::__GFP_KSWAPD_RECLAIM.bits() | Self::__GFP_NOWARN.bits();
        /// May reclaim but start no IO (block-layer paths).
        const GFP_NOIO = Self::__GFP_RECLAIM.bits();
        /// May reclaim and do IO but not re-enter the filesystem.
        const GFP_NOFS = Self::__GFP_RECLAIM.bits() | Self::__GFP_IO.bits();
        /// User-space allocation (GFP_KERNEL plus the ignored hardwall bit).
        const GFP_USER = Self::GFP_KERNEL.bits() | Self::__GFP_HARDWALL.bits();
        /// User pages that may live in highmem (`GFP_USER | __GFP_HIGHMEM`).
        const GFP_HIGHUSER = Self::GFP_USER.bits() | Self::__GFP_HIGHMEM.bits();
        /// An application's anonymous and page-cache pages, what a page
        /// fault allocates (`GFP_HIGHUSER | __GFP_MOVABLE`, as 4.x and 5.x
        /// define it; newer trees add KASAN-skip bits kreclaim does not
        /// have): __GFP_FS, so its direct reclaim runs the fs shrinkers.
        const GFP_HIGHUSER_MOVABLE = Self::GFP_HIGHUSER.bits() | Self::__GFP_MOVABLE.bits();
    }
}

/// Re-exports so code reads like Linux: `GFP_KERNEL | __GFP_ZERO`.
pub const GFP_KERNEL: Gfp = Gfp::GFP_KERNEL;
/// See [`Gfp::GFP_KERNEL_ACCOUNT`].
pub const GFP_KERNEL_ACCOUNT: Gfp = Gfp::GFP_KERNEL_ACCOUNT;
/// See [`Gfp::GFP_ATOMIC`].
pub const GFP_ATOMIC: Gfp = Gfp::GFP_ATOMIC;
/// See [`Gfp::GFP_NOWAIT`].
pub const GFP_NOWAIT: Gfp = Gfp::GFP_NOWAIT;
/// See [`Gfp::GFP_NOIO`].
pub const GFP_NOIO: Gfp = Gfp::GFP_NOIO;
/// See [`Gfp::GFP_NOFS`].
pub const GFP_NOFS: Gfp = Gfp::GFP_NOFS;
/// See [`Gfp::GFP_USER`].
pub const GFP_USER: Gfp = Gfp::GFP_USER;
/// See [`Gfp::GFP_HIGHUSER`].
pub const GFP_HIGHUSER: Gfp = Gfp::GFP_HIGHUSER;
/// See [`Gfp::GFP_HIGHUSER_MOVABLE`].
pub const GFP_HIGHUSER_MOVABLE: Gfp = Gfp::GFP_HIGHUSER_MOVABLE;

impl Gfp {
    /// `gfpflags_allow_blocking()`: may this allocation sleep in reclaim?
    #[inline]
    pub const fn allows_blocking(self) -> bool {
        self.contains(Gfp::__GFP_DIRECT_RECLAIM)
    }
}

/// Composite names tried first, in Linux's `__def_gfpflag_names` order.
const COMPOSITES: &[(&str, Gfp)] = &[
    ("GFP_HIGHUSER_MOVABLE", Gfp::GFP_HIGHUSER_MOVABLE),
    ("GFP_HIGHUSER", Gfp::GFP_HIGHUSER),
    ("GFP_USER", Gfp::GFP_USER),
    ("GFP_KERNEL_ACCOUNT", Gfp::GFP_KERNEL_ACCOUNT),
    ("GFP_KERNEL", Gfp::GFP_KERNEL),
    ("GFP_NOFS", Gfp::GFP_NOFS),
    ("GFP_ATOMIC", Gfp::GFP_ATOMIC),
    ("GFP_NOIO", Gfp::GFP_NOIO),
    ("GFP_NOWAIT", Gfp::GFP_NOWAIT),
];

const SINGLES: &[(&str, Gfp)] = &[
    ("__GFP_DMA", Gfp::__GFP_DMA),
    ("__GFP_HIGHMEM", Gfp::__GFP_HIGHMEM),
    ("__GFP_DMA32", Gfp::__GFP_DMA32),
    ("__GFP_MOVABLE", Gfp::__GFP_MOVABLE),
    ("__GFP_RECLAIMABLE", Gfp::__GFP_RECLAIMABLE),
    ("__GFP_HIGH", Gfp::__GFP_HIGH),
    ("__GFP_IO", Gfp::__GFP_IO),
    ("__GFP_FS", Gfp::__GFP_FS),
    ("__GFP_ZERO", Gfp::__GFP_ZERO),
    ("__GFP_DIRECT_RECLAIM", Gfp::__GFP_DIRECT_RECLAIM),
    ("__GFP_KSWAPD_RECLAIM", Gfp::__GFP_KSWAPD_RECLAIM),
    ("__GFP_WRITE", Gfp::__GFP_WRITE),
    ("__GFP_NOWARN", Gfp::__GFP_NOWARN),
    ("__GFP_RETRY_MAYFAIL", Gfp::__GFP_RETRY_MAYFAIL),
    ("__GFP_NOFAIL", Gfp::__GFP_NOFAIL),
    ("__GFP_NORETRY", Gfp::__GFP_NORETRY),
    ("__GFP_MEMALLOC", Gfp::__GFP_MEMALLOC),
    ("__GFP_COMP", Gfp::__GFP_COMP),
    ("__GFP_NOMEMALLOC", Gfp::__GFP_NOMEMALLOC),
    ("__GFP_HARDWALL", Gfp::__GFP_HARDWALL),
    ("__GFP_THISNODE", Gfp::__GFP_THISNODE),
    ("__GFP_ACCOUNT", Gfp::__GFP_ACCOUNT),
    ("__GFP_ZEROTAGS", Gfp::__GFP_ZEROTAGS),
    ("__GFP_NOLOCKDEP", Gfp::__GFP_NOLOCKDEP),
];

impl fmt::Display for Gfp {
    /// Like Linux's `%pGg`: the first composite that fits, then single
    /// flags, then any unknown bits in hex; `0` for no flags.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("0");
        }
        let mut rest = *self;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if !core::mem::replace(&mut first, false) {
                f.write_str("|")
            } else {
                Ok(())
            }
        };
        if let Some((name, bits)) = COMPOSITES.iter().find(|(_, b)| rest.contains(*b)) {
            sep(f)?;
            f.write_str(name)?;
            rest.remove(*bits);
        }
        for (name, bit) in SINGLES {
            if rest.contains(*bit) {
                sep(f)?;
                f.write_str(name)?;
                rest.remove(*bit);
            }
        }
        let unknown = self.bits() & !Gfp::all().bits();
        if unknown != 0 {
            sep(f)?;
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Gfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} ({:#x})", self.bits())
    }
}

/// A failed allocation: the effective mask and the order (pages come in
/// 2^order blocks; a failed kmalloc or global allocation reports order 0
/// or the order of the block it asked for). Defined beside the flags so that
/// everything that allocates can name it without depending on the page
/// allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocError {
    /// The effective mask, after the task's scope was applied.
    pub gfp: Gfp,
    /// Block order (2^order pages).
    pub order: u32,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page allocation failure: order:{}, mode:{}",
            self.order, self.gfp
        )
    }
}
