//! Fault injection, like Linux's `lib/fault-inject.c` behind
//! `fail_page_alloc` and `failslab`: make chosen allocations fail on purpose
//! so that error paths get exercised.
//!
//! A [`FaultAttr`] decides per call with [`should_fail`]: nothing fails while
//! the probability is 0 or `times` is used up; the first `space` bytes pass;
//! then only every `interval`-th eligible call is a candidate, and a
//! candidate fails with `probability` percent. The random numbers come from a
//! xorshift generator with a fixed seed, reset by every (re)configuration, so
//! a run is reproducible.
//!
//! `space` is in the attribute's units, as in Linux: bytes for `failslab`,
//! pages for `fail_page_alloc` (an order-n allocation counts 2^n).
//! `fail_page_alloc` also has Linux's `min-order`: smaller orders never fail.
//!
//! Deviations: Linux defaults `ignore-gfp-wait` to Y (only allocations that
//! cannot sleep fail) and `fail_page_alloc`'s `min-order` to 1. kreclaim
//! defaults them to N and 0, because its point is the error paths of
//! sleeping allocations on reclaim paths, and nearly all of its own page
//! allocations (slab pages, page tables) are order 0;
//! [`FaultAttr::set_ignore_gfp_reclaim`] and [`FaultAttr::set_min_order`]
//! (`fail_page_alloc_min_order=`) restore Linux's filters.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

const SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// One fault-injection point's configuration and state.
pub struct FaultAttr {
    name: &'static str,
    /// Percent (0..=100) of candidate calls that fail.
    probability: AtomicU32,
    /// Only every interval-th eligible call is a candidate (0 and 1: all).
    interval: AtomicU64,
    /// Failures left; -1 for unlimited.
    times: AtomicI64,
    /// Bytes that pass before anything fails.
    space: AtomicI64,
    count: AtomicU64,
    rng: AtomicU64,
    ignore_gfp_reclaim: AtomicBool,
    /// Requests of a smaller order never fail (`fail_page_alloc` only).
    min_order: AtomicU32,
    injected: AtomicU64,
}

/// `<interval>,<probability>,<space>,<times>` as on Linux's command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    /// Only every `interval`-th eligible call may fail (0 and 1: any call).
    pub interval: u64,
    /// Chance of failing an eligible call, in percent.
    pub probability: u32,
    /// Units allocated before injection starts: bytes for `failslab`,
    /// pages for `fail_page_alloc`.
    pub space: u64,
    /// Most failures to inject; -1 for no limit.
    pub times: i64,
}

impl FaultSpec {
    /// Parses Linux's `setup_fault_attr` syntax. Stricter than Linux's
    /// sscanf: all four fields, nothing after them, probability <= 100 and
    /// times >= -1.
    pub fn parse(s: &str) -> Option<FaultSpec> {
        let mut it = s.split(',');
        let interval = it.next()?.parse().ok()?;
        let probability: u32 = it.next()?.parse().ok()?;
        let space = it.next()?.parse().ok()?;
        let times: i64 = it.next()?.parse().ok()?;
        if it.next().is_some() || probability > 100 || times < -1 || times > i32::MAX as i64 {
            return None;
        }
        Some(FaultSpec {
            interval,
            probability,
            space,
            times,
        })
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.interval, self.probability, self.space, self.times
        )
    }
}

impl FaultAttr {
    /// A disabled fault point (probability 0) named `name`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            probability: AtomicU32::new(0),
            interval: AtomicU64::new(1),
            times: AtomicI64::new(1),
            space: AtomicI64::new(0),
            count: AtomicU64::new(0),
            rng: AtomicU64::new(SEED),
            ignore_gfp_reclaim: AtomicBool::new(false),
            min_order: AtomicU32::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Requests below `order` never fail (Linux's `min-order`; page
    /// allocations only).
    pub fn set_min_order(&self, order: u32) {
        self.min_order.store(order, Ordering::SeqCst);
    }

    /// See [`FaultAttr::set_min_order`].
    pub fn min_order(&self) -> u32 {
        self.min_order.load(Ordering::Relaxed)
    }

    /// Whether the fault point can fail anything at all (probability above
    /// 0): one relaxed load, so that fast paths pay nothing more while fault
    /// injection is off and call [`should_fail`] only when it is on.
    #[inline(always)]
    pub fn armed(&self) -> bool {
        self.probability.load(Ordering::Relaxed) != 0
    }

    /// The attribute's name (`fail_page_alloc`, `failslab`), for reports.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Fail `probability` percent of every `interval`-th call, at most
    /// `times` times (-1: no limit). Resets the call count, the space and the
    /// random sequence.
    pub fn configure(&self, probability: u32, interval: u64, times: i64) {
        self.probability.store(0, Ordering::SeqCst);
        self.interval.store(interval, Ordering::SeqCst);
        self.times.store(times, Ordering::SeqCst);
        self.space.store(0, Ordering::SeqCst);
        self.count.store(0, Ordering::SeqCst);
        self.rng.store(SEED, Ordering::SeqCst);
        self.probability
            .store(probability.min(100), Ordering::SeqCst);
        if probability != 0 && core::ptr::eq(self, &FAILSLAB) {
            // The slab fast path does not test `failslab`: off it goes (the
            // slab's slow path turns it back on once failslab is disarmed).
            crate::platform::SLAB_ALLOC_FAST.store(false, Ordering::SeqCst);
        }
        if probability != 0 && core::ptr::eq(self, &FAIL_PAGE_ALLOC) {
            // Nor does the page allocator's (see `page_alloc::alloc_pages`).
            crate::platform::PAGE_ALLOC_FAST.store(false, Ordering::SeqCst);
        }
    }

    /// Applies a command-line spec.
    pub fn apply_spec(&self, s: FaultSpec) {
        self.configure(s.probability, s.interval, s.times);
        self.set_space(s.space);
    }

    /// Lets the first `units` of requests pass (bytes for `failslab`,
    /// pages for `fail_page_alloc`).
    pub fn set_space(&self, units: u64) {
        self.space
            .store(units.min(i64::MAX as u64) as i64, Ordering::SeqCst);
    }

    /// Nothing fails any more.
    pub fn disable(&self) {
        self.probability.store(0, Ordering::SeqCst);
    }

    /// Whether failures are being injected (probability above zero).
    pub fn is_enabled(&self) -> bool {
        self.probability.load(Ordering::Relaxed) != 0
    }

    /// Linux's `ignore-gfp-wait`: when set, allocations that may sleep in
    /// direct reclaim never fail on purpose.
    pub fn set_ignore_gfp_reclaim(&self, ignore: bool) {
        self.ignore_gfp_reclaim.store(ignore, Ordering::SeqCst);
    }

    /// Whether allocations that may sleep in direct reclaim are spared
    /// (Linux's `ignore-gfp-wait`).
    pub fn ignore_gfp_reclaim(&self) -> bool {
        self.ignore_gfp_reclaim.load(Ordering::Relaxed)
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Failures left (-1: unlimited).
    pub fn times_left(&self) -> i64 {
        self.times.load(Ordering::Relaxed)
    }

    /// xorshift64, below 100.
    fn random_percent(&self) -> u32 {
        let next = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let old = self
            .rng
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(next(x)))
            .unwrap_or(SEED);
        (next(old) % 100) as u32
    }
}

impl fmt::Display for FaultAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: probability {}%, interval {}, space {}, times {}, injected {}",
            self.name,
            self.probability.load(Ordering::Relaxed),
            self.interval.load(Ordering::Relaxed),
            self.space.load(Ordering::Relaxed),
            self.times.load(Ordering::Relaxed),
            self.injected()
        )
    }
}

/// Should this call (of `size` bytes) fail? Linux's `should_fail`, in its
/// order: probability 0, times used up, space left, interval, probability.
pub fn should_fail(attr: &FaultAttr, size: usize) -> bool {
    let probability = attr.probability.load(Ordering::Relaxed);
    if probability == 0 {
        return false;
    }
    if attr.times.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let size = size.min(i64::MAX as usize) as i64;
    if attr.space.load(Ordering::Relaxed) > size {
        attr.space.fetch_sub(size, Ordering::Relaxed);
        return false;
    }
    let interval = attr.interval.load(Ordering::Relaxed);
    if interval > 1 {
        let n = attr.count.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(interval) {
            return false;
        }
    }
    if probability <= attr.random_percent() {
        return false;
    }
    // atomic_dec_not_zero unless unlimited.
    let _ = attr
        .times
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
            (t > 0).then(|| t - 1)
        });
    attr.injected.fetch_add(1, Ordering::Relaxed);
    true
}

/// Page-allocator failures (`fail_page_alloc=` on the command line).
pub static FAIL_PAGE_ALLOC: FaultAttr = FaultAttr::new("fail_page_alloc");
/// Slab failures (`failslab=`), for the slab layer.
pub static FAILSLAB: FaultAttr = FaultAttr::new("failslab");
