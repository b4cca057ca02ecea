//! Shrinkers: caches that can give memory back when reclaim asks
//! (`include/linux/shrinker.h`, `mm/shrinker.c`).
//!
//! A cache implements [`Shrinker`] and registers it with a
//! [`ShrinkerBuilder`]; the returned [`ShrinkerRegistration`] unregisters on
//! drop and waits for scans running on other tasks (from inside its own
//! callback it cannot wait for itself: that is reported, not waited for). Reclaim calls
//! [`shrink_slab`], which runs Linux's `do_shrink_slab` arithmetic on every
//! shrinker, including the per-shrinker deferred work that moves a scan
//! refused by a GFP_NOFS caller to the next caller allowed to do it.
//!
//! Reclaim never blocks on the registry: it holds the registry's spinlock
//! only to take a reference to one entry at a time (Linux 6.7+ does the same
//! with RCU and a refcount), and unregistration waits outside the lock:
//! like `shrinker_free` it drops the registration's reference and blocks on
//! the entry's `done` completion, which the last call in flight signals.

use crate::mm::gfp::Gfp;
use crate::mm::inline_name::InlineName;
use crate::sync::SpinLock;
use crate::sync::waitqueue::Completion;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

/// `SHRINK_BATCH`: objects per scan call when a shrinker sets no batch.
pub const SHRINK_BATCH: u64 = 128;
/// `DEFAULT_SEEKS`: the relative cost of recreating an object.
pub const DEFAULT_SEEKS: u32 = 2;

/// What `count_objects` found: a number of freeable objects, "none at all"
/// ([`CountObjects::EMPTY`]), or 0 meaning "cannot tell now" (e.g. a lock
/// was contended) — Linux gives 0 and SHRINK_EMPTY different meanings.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CountObjects(u64);

impl CountObjects {
    /// `SHRINK_EMPTY`: the cache has no objects at all.
    pub const EMPTY: CountObjects = CountObjects(!0 - 1);
    /// 0: nothing can be counted right now.
    pub const UNKNOWN: CountObjects = CountObjects(0);

    /// `n` freeable objects (`0` is [`CountObjects::UNKNOWN`]).
    pub const fn new(n: u64) -> Self {
        if n >= !0 - 1 { Self(!0 - 2) } else { Self(n) }
    }

    /// The value Linux's `count_objects` would return.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for CountObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::EMPTY => f.write_str("SHRINK_EMPTY"),
            Self(n) => write!(f, "{n}"),
        }
    }
}

/// What `scan_objects` did: the number of objects freed, or
/// [`ScanObjects::STOP`] — no progress is possible in this context (for
/// example no __GFP_FS); the pass ends and the work stays deferred.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ScanObjects(u64);

impl ScanObjects {
    /// `SHRINK_STOP`.
    pub const STOP: ScanObjects = ScanObjects(!0);

    /// `n` objects freed (saturating below [`ScanObjects::STOP`]).
    pub const fn freed(n: u64) -> Self {
        if n == !0 { Self(!0 - 1) } else { Self(n) }
    }

    /// The value Linux's `scan_objects` would return.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ScanObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::STOP => f.write_str("SHRINK_STOP"),
            Self(n) => write!(f, "freed {n}"),
        }
    }
}

/// `struct shrink_control`: what reclaim asks of one shrinker call.
#[derive(Debug, Clone)]
pub struct ShrinkControl {
    gfp: Gfp,
    nr_to_scan: u64,
    nr_scanned: u64,
    /// Objects scanned over every call of this pass (Linux's
    /// `SLABS_SCANNED` event count), for the caller's priority decisions.
    scanned_total: u64,
}

impl ShrinkControl {
    /// A control for a caller whose gfp went through `current_gfp_context`.
    pub fn new(gfp: Gfp) -> Self {
        Self {
            gfp,
            nr_to_scan: 0,
            nr_scanned: 0,
            scanned_total: 0,
        }
    }

    /// The allocation's mask: what the shrinker may do (e.g. no fs work without __GFP_FS).
    pub fn gfp(&self) -> Gfp {
        self.gfp
    }

    /// Objects to look at in this call.
    pub fn nr_to_scan(&self) -> u64 {
        self.nr_to_scan
    }

    /// Preset to `nr_to_scan`; lower it to the real progress.
    pub fn nr_scanned(&self) -> u64 {
        self.nr_scanned
    }

    /// Reports how many objects were scanned, when not `nr_to_scan`.
    pub fn set_nr_scanned(&mut self, n: u64) {
        self.nr_scanned = n;
    }

    /// May this call enter the filesystem (__GFP_FS)?
    pub fn reclaim_fs_allowed(&self) -> bool {
        self.gfp.contains(Gfp::__GFP_FS)
    }

    /// May this call start IO (__GFP_IO)?
    pub fn reclaim_io_allowed(&self) -> bool {
        self.gfp.contains(Gfp::__GFP_IO)
    }
}

/// A cache that reclaim can shrink.
pub trait Shrinker: Send + Sync {
    /// How many objects could be freed. Must not block or allocate.
    fn count_objects(&self, sc: &ShrinkControl) -> CountObjects;
    /// Free up to `sc.nr_to_scan()` objects; report the real number looked
    /// at with `sc.set_nr_scanned` if it differs.
    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects;
}

/// Per-shrinker statistics.
#[derive(Debug, Default)]
pub struct ShrinkerStats {
    /// do_shrink_slab invocations.
    pub calls: AtomicU64,
    /// scan_objects invocations.
    pub scan_calls: AtomicU64,
    /// Objects scanned.
    pub scanned: AtomicU64,
    /// Objects freed.
    pub freed: AtomicU64,
    /// The highest value nr_deferred reached after a call (Linux's
    /// `mm_shrink_slab_end` tracepoint reports the value after each call,
    /// "new scan count"; a sum over calls would count the same work again
    /// every time a caller claims it and defers it back).
    pub deferred_peak: AtomicU64,
    /// `scan_objects` calls that returned [`ScanObjects::STOP`].
    pub stops: AtomicU64,
    /// Contract violations found (see [`ShrinkerViolation`]).
    pub violations: AtomicU64,
}

/// A snapshot of one shrinker for reports.
#[derive(Debug, Clone)]
pub struct ShrinkerInfo {
    /// The shrinker's name.
    pub name: String,
    /// Cost of recreating an object (Linux's `seeks`; higher: scanned less).
    pub seeks: u32,
    /// Objects per `scan_objects` call.
    pub batch: u64,
    /// Scan work deferred to the next pass (e.g. after a STOP).
    pub nr_deferred: i64,
    /// See [`ShrinkerStats::calls`].
    pub calls: u64,
    /// See [`ShrinkerStats::scan_calls`].
    pub scan_calls: u64,
    /// See [`ShrinkerStats::scanned`].
    pub scanned: u64,
    /// See [`ShrinkerStats::freed`].
    pub freed: u64,
    /// See [`ShrinkerStats::deferred_peak`].
    pub deferred_peak: u64,
    /// See [`ShrinkerStats::stops`].
    pub stops: u64,
    /// See [`ShrinkerStats::violations`].
    pub violations: u64,
}

/// A shrinker breaking its contract; reported with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShrinkerViolation {
    /// count_objects returned SHRINK_STOP (only scan may).
    CountReturnedStop,
    /// scan_objects claimed to free more than it was asked to scan.
    FreedMoreThanScanned,
    /// scan_objects raised nr_scanned above nr_to_scan.
    ScannedMoreThanAsked,
    /// scan_objects set nr_scanned to 0 without returning SHRINK_STOP
    /// (Linux would loop on it forever).
    ScannedNothing,
}

/// Why [`ShrinkerRegistration::unregister`] could not finish as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnregisterError {
    /// Called from inside the shrinker's own `count_objects` or
    /// `scan_objects` on this task. Waiting for that call to end would wait
    /// forever, so the shrinker is only removed: reclaim calls it no more,
    /// and it is freed when the call in progress returns.
    InOwnCallback {
        /// The shrinker's name.
        name: InlineName,
    },
}

impl fmt::Display for UnregisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InOwnCallback { name } => write!(
                f,
                "shrinker '{name}' unregistered from its own callback: not waiting for itself"
            ),
        }
    }
}

static IN_OWN_CALLBACK: AtomicU64 = AtomicU64::new(0);

/// How many unregistrations were made from inside the shrinker's own
/// callback (reported, and not waited for) since boot.
pub fn unregistrations_in_own_callback() -> u64 {
    IN_OWN_CALLBACK.load(Ordering::Relaxed)
}

/// A shrinker call in progress, on the calling task's stack and linked from
/// the task (innermost first), so that unregistration can tell when it runs
/// inside the very shrinker it unregisters.
struct ShrinkerCall {
    entry: *const Entry,
    outer: usize,
}

/// Whether the current task is inside a callback of `e`.
fn in_own_callback(e: &Entry) -> bool {
    let mut at = crate::task::current().shrinker_call();
    while at != 0 {
        // SAFETY: linked frames live on this task's stack until unlinked.
        let call = unsafe { &*(at as *const ShrinkerCall) };
        if core::ptr::eq(call.entry, e) {
            return true;
        }
        at = call.outer;
    }
    false
}

struct Entry {
    name: String,
    seeks: u32,
    batch: u64,
    nr_deferred: AtomicI64,
    shrinker: Box<dyn Shrinker>,
    stats: ShrinkerStats,
    dead: AtomicBool,
    /// Linux's `shrinker->refcount`: one for the registration and one per
    /// call in progress. Once it reaches 0 it stays 0: no new call starts.
    refcount: AtomicUsize,
    /// Linux's `shrinker->done`: completed by the call that drops the last
    /// reference after unregistration dropped the registration's own.
    done: Completion,
}

impl Entry {
    /// `shrinker_try_get`: a reference for one call, unless unregistration
    /// has already dropped the last one.
    fn try_get(&self) -> bool {
        let mut n = self.refcount.load(Ordering::Acquire);
        while n != 0 {
            match self
                .refcount
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    /// Drops one reference; returns whether it was the last.
    fn put_ref(&self) -> bool {
        self.refcount.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// A reference to a registered shrinker for one call (`shrinker_try_get`
/// .. `shrinker_put`). Dropping the last one after unregistration signals
/// `done`, which unregistration waits on.
struct EntryRef(Arc<Entry>);

impl EntryRef {
    fn try_get(e: &Arc<Entry>) -> Option<Self> {
        e.try_get().then(|| Self(e.clone()))
    }
}

impl Drop for EntryRef {
    fn drop(&mut self) {
        if self.0.put_ref() {
            self.0.done.complete();
        }
    }
}

/// The registered shrinkers. Slots are reused; reclaim walks them by index.
static REGISTRY: SpinLock<Vec<Option<Arc<Entry>>>> =
    SpinLock::new(Vec::new(), crate::lock_class!("shrinker_registry"));

/// Builds a shrinker registration (Linux's `shrinker_alloc` + settings).
pub struct ShrinkerBuilder {
    /// `Err` if copying the name failed; registration then fails.
    name: Result<String, crate::mm::page_alloc::AllocError>,
    /// The name for errors, copied without allocating.
    err_name: InlineName,
    seeks: u32,
    batch: u64,
}

/// Why registration failed, naming the shrinker. The registry has no fixed
/// size (it grows like Linux's shrinker list), so the only failure is a lack
/// of memory for the shrinker, its name or a larger registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// No memory for the shrinker, its name or the registry.
    NoMemory {
        /// The shrinker's name.
        name: InlineName,
    },
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMemory { name } => {
                write!(f, "register shrinker '{name}': out of memory")
            }
        }
    }
}

impl ShrinkerBuilder {
    /// A shrinker named `name` with Linux's defaults.
    pub fn new(name: &str) -> Self {
        Self {
            name: crate::mm::global_alloc::try_string(name),
            err_name: InlineName::new(name),
            seeks: DEFAULT_SEEKS,
            batch: 0,
        }
    }

    /// Cost of recreating an object (0 = free to recreate: scan half the count).
    pub fn seeks(mut self, seeks: u32) -> Self {
        self.seeks = seeks;
        self
    }

    /// Objects per scan call (0 = SHRINK_BATCH).
    pub fn batch(mut self, batch: u64) -> Self {
        self.batch = batch;
        self
    }

    /// Registers `shrinker`; reclaim may call it as soon as this returns.
    pub fn register(
        self,
        shrinker: impl Shrinker + 'static,
    ) -> Result<ShrinkerRegistration, RegisterError> {
        use crate::mm::global_alloc::{try_arc, try_box};
        let name = self.err_name;
        let nomem = |_| RegisterError::NoMemory { name };
        let shrinker: Box<dyn Shrinker> = try_box(shrinker).map_err(nomem)?;
        let entry = try_arc(Entry {
            name: self.name.map_err(nomem)?,
            seeks: self.seeks,
            batch: self.batch,
            nr_deferred: AtomicI64::new(0),
            shrinker,
            stats: ShrinkerStats::default(),
            dead: AtomicBool::new(false),
            refcount: AtomicUsize::new(1),
            done: Completion::new(),
        })
        .map_err(nomem)?;
        // Grow outside the lock so the registry lock never allocates.
        let mut spare: Vec<Option<Arc<Entry>>> = Vec::new();
        loop {
            let mut reg = REGISTRY.lock();
            if let Some(slot) = reg.iter_mut().find(|s| s.is_none()) {
                *slot = Some(entry.clone());
                return Ok(ShrinkerRegistration {
                    entry,
                    unregistered: false,
                });
            }
            if spare.capacity() > reg.len() {
                spare.extend(reg.drain(..));
                spare.push(Some(entry.clone()));
                core::mem::swap(&mut *reg, &mut spare);
                drop(reg);
                return Ok(ShrinkerRegistration {
                    entry,
                    unregistered: false,
                });
            }
            let want = reg.len() * 2 + 4;
            drop(reg);
            spare = Vec::new();
            spare
                .try_reserve_exact(want)
                .map_err(|_| RegisterError::NoMemory { name })?;
        }
    }
}

/// A registered shrinker. Dropping it unregisters the shrinker and blocks
/// until no other task is inside its callbacks (the last one to leave
/// completes the wait; nothing polls).
pub struct ShrinkerRegistration {
    entry: Arc<Entry>,
    unregistered: bool,
}

impl ShrinkerRegistration {
    /// The shrinker's name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// Deferred work waiting for a capable caller.
    pub fn nr_deferred(&self) -> i64 {
        self.entry.nr_deferred.load(Ordering::Relaxed)
    }

    /// Live counters.
    pub fn stats(&self) -> &ShrinkerStats {
        &self.entry.stats
    }

    /// A snapshot for reports.
    pub fn info(&self) -> ShrinkerInfo {
        info_of(&self.entry)
    }

    /// Runs `do_shrink_slab` on this shrinker alone (for tests and tools);
    /// `gfp` is filtered through `current_gfp_context` like reclaim does.
    pub fn shrink(&self, gfp: Gfp, priority: u32) -> u64 {
        let Some(r) = EntryRef::try_get(&self.entry) else {
            return 0; // unregistered from its own callback
        };
        let mut sc = ShrinkControl::new(crate::mm::scope::current_gfp_context(gfp));
        do_shrink_slab(&mut sc, &r.0, priority)
    }

    /// Unregisters the shrinker and waits until no other task is inside its
    /// callbacks (what dropping the registration does, with the outcome).
    /// From inside the shrinker's own callback it cannot wait for itself:
    /// that is reported and returned as [`UnregisterError::InOwnCallback`],
    /// and the shrinker, already out of the registry, is freed when the
    /// callback returns.
    pub fn unregister(mut self) -> Result<(), UnregisterError> {
        self.unregistered = true;
        self.unregister_inner()
    }

    fn unregister_inner(&self) -> Result<(), UnregisterError> {
        self.entry.dead.store(true, Ordering::Release);
        {
            let mut reg = REGISTRY.lock();
            for slot in reg.iter_mut() {
                if slot.as_ref().is_some_and(|e| Arc::ptr_eq(e, &self.entry)) {
                    *slot = None;
                }
            }
        }
        if in_own_callback(&self.entry) {
            // Waiting below would wait for this very task: forever. The
            // call in progress holds a reference, so this put is not the
            // last; that call's put completes `done` with no one waiting.
            self.entry.put_ref();
            IN_OWN_CALLBACK.fetch_add(1, Ordering::Relaxed);
            self.entry.stats.violations.fetch_add(1, Ordering::Relaxed);
            let e = UnregisterError::InOwnCallback {
                name: InlineName::new(&self.entry.name),
            };
            crate::println!(
                "BUG: {e} (task '{}'); it is removed and freed when the callback returns",
                crate::task::current().name()
            );
            return Err(e);
        }
        // `shrinker_free`: drop the registration's reference; if calls are
        // in flight on other tasks, the last of them completes `done`.
        if !self.entry.put_ref() {
            self.entry.done.wait();
        }
        Ok(())
    }
}

impl Drop for ShrinkerRegistration {
    fn drop(&mut self) {
        if !self.unregistered {
            let _ = self.unregister_inner();
        }
    }
}

fn info_of(e: &Entry) -> ShrinkerInfo {
    ShrinkerInfo {
        name: e.name.clone(),
        ..info_of_counts(e)
    }
}

/// The numbers of [`info_of`], with an empty (unallocated) name.
fn info_of_counts(e: &Entry) -> ShrinkerInfo {
    ShrinkerInfo {
        name: String::new(),
        seeks: e.seeks,
        batch: if e.batch == 0 { SHRINK_BATCH } else { e.batch },
        nr_deferred: e.nr_deferred.load(Ordering::Relaxed),
        calls: e.stats.calls.load(Ordering::Relaxed),
        scan_calls: e.stats.scan_calls.load(Ordering::Relaxed),
        scanned: e.stats.scanned.load(Ordering::Relaxed),
        freed: e.stats.freed.load(Ordering::Relaxed),
        deferred_peak: e.stats.deferred_peak.load(Ordering::Relaxed),
        stops: e.stats.stops.load(Ordering::Relaxed),
        violations: e.stats.violations.load(Ordering::Relaxed),
    }
}

/// Counts every violation; prints the first one of each shrinker.
fn violation(e: &Entry, v: ShrinkerViolation, detail: fmt::Arguments) {
    if e.stats.violations.fetch_add(1, Ordering::Relaxed) != 0 {
        return;
    }
    crate::println!(
        "WARNING: shrinker '{}' broke its contract ({v:?}): {detail}",
        e.name
    );
}

/// Linux's `do_shrink_slab`: one shrinker at one priority. Returns the
/// objects freed, or the count (0 / SHRINK_EMPTY) when nothing was tried.
/// The call is linked from the task while it runs (see [`in_own_callback`]).
fn do_shrink_slab(sc: &mut ShrinkControl, e: &Entry, priority: u32) -> u64 {
    let task = crate::task::current();
    let call = ShrinkerCall {
        entry: e,
        outer: task.shrinker_call(),
    };
    task.set_shrinker_call(&call as *const ShrinkerCall as usize);
    let freed = shrink_one(sc, e, priority);
    task.set_shrinker_call(call.outer);
    freed
}

fn shrink_one(sc: &mut ShrinkControl, e: &Entry, priority: u32) -> u64 {
    e.stats.calls.fetch_add(1, Ordering::Relaxed);
    let count = e.shrinker.count_objects(sc);
    if count.raw() == !0 {
        violation(
            e,
            ShrinkerViolation::CountReturnedStop,
            format_args!("count_objects returned SHRINK_STOP"),
        );
        return 0;
    }
    if count == CountObjects::UNKNOWN || count == CountObjects::EMPTY {
        log::trace!(
            "shrink_slab: '{}' priority {priority}: count {count:?}, nothing to scan",
            e.name
        );
        return count.raw();
    }
    let freeable = count.raw() as i64;
    // Claim all deferred work.
    let nr = e.nr_deferred.swap(0, Ordering::AcqRel);
    let delta = if e.seeks != 0 {
        (freeable >> priority) * 4 / e.seeks as i64
    } else {
        freeable / 2
    };
    let mut total_scan = ((nr >> priority) + delta).min(2 * freeable);
    let to_scan = total_scan;
    let mut stopped = false;
    let batch = if e.batch == 0 { SHRINK_BATCH } else { e.batch } as i64;
    let mut freed: u64 = 0;
    let mut scanned: i64 = 0;
    // `>= freeable` lets caches smaller than one batch be emptied.
    while total_scan >= batch || total_scan >= freeable {
        let nr_to_scan = batch.min(total_scan) as u64;
        sc.nr_to_scan = nr_to_scan;
        sc.nr_scanned = nr_to_scan;
        e.stats.scan_calls.fetch_add(1, Ordering::Relaxed);
        let ret = e.shrinker.scan_objects(sc);
        if ret == ScanObjects::STOP {
            e.stats.stops.fetch_add(1, Ordering::Relaxed);
            stopped = true;
            break;
        }
        if sc.nr_scanned > nr_to_scan {
            violation(
                e,
                ShrinkerViolation::ScannedMoreThanAsked,
                format_args!("nr_scanned {} > nr_to_scan {nr_to_scan}", sc.nr_scanned),
            );
            sc.nr_scanned = nr_to_scan;
        }
        if ret.raw() > nr_to_scan {
            violation(
                e,
                ShrinkerViolation::FreedMoreThanScanned,
                format_args!("freed {} of {nr_to_scan} scanned", ret.raw()),
            );
        }
        freed += ret.raw();
        total_scan -= sc.nr_scanned as i64;
        scanned += sc.nr_scanned as i64;
        e.stats.scanned.fetch_add(sc.nr_scanned, Ordering::Relaxed);
        sc.scanned_total += sc.nr_scanned;
        if sc.nr_scanned == 0 {
            // Linux loops here for as long as the shrinker says it scanned
            // nothing; shrinkers that cannot progress return SHRINK_STOP.
            // We report the broken contract and end the pass instead of
            // spinning forever.
            violation(
                e,
                ShrinkerViolation::ScannedNothing,
                format_args!("nr_scanned 0 of nr_to_scan {nr_to_scan} without SHRINK_STOP"),
            );
            break;
        }
        if e.dead.load(Ordering::Acquire) {
            break; // unregistered meanwhile (from its own callback)
        }
    }
    e.stats.freed.fetch_add(freed, Ordering::Relaxed);
    // Whatever was not done is deferred to the next caller (capped at 2x).
    let next_deferred = (nr + delta - scanned).max(0).min(2 * freeable);
    // Linux's add_nr_deferred: the value after adding is what the
    // `mm_shrink_slab_end` tracepoint reports as the new scan count.
    let new_nr = if next_deferred > 0 {
        e.nr_deferred.fetch_add(next_deferred, Ordering::AcqRel) + next_deferred
    } else {
        e.nr_deferred.load(Ordering::Acquire)
    };
    e.stats
        .deferred_peak
        .fetch_max(new_nr.max(0) as u64, Ordering::Relaxed);
    // One line per call at trace; a refusal (SHRINK_STOP) also at debug.
    log::log!(
        if stopped {
            log::Level::Debug
        } else {
            log::Level::Trace
        },
        "shrink_slab: '{}' priority {priority} {}: freeable {freeable}, deferred in {nr}, \
         to scan {to_scan}, scanned {scanned}, freed {freed}, nr_deferred after {new_nr}{}",
        e.name,
        sc.gfp,
        if stopped { ", SHRINK_STOP" } else { "" }
    );
    freed
}

/// Calls `f` on every registered shrinker, taking a reference to one entry
/// at a time under the registry lock: `f` runs without the lock, so reclaim
/// never blocks on the registry, and unregistration waits (blocked on the
/// entry's `done` completion) until the last `f` drops its reference.
fn for_each_entry(mut f: impl FnMut(&Arc<Entry>)) {
    let mut i = 0;
    loop {
        let entry = {
            let reg = REGISTRY.lock();
            if i >= reg.len() {
                break;
            }
            reg[i].as_ref().and_then(EntryRef::try_get)
        };
        i += 1;
        if let Some(r) = entry {
            f(&r.0);
        }
    }
}

/// Runs every registered shrinker at `priority` (12 = gentlest .. 0) for a
/// caller whose gfp already went through `current_gfp_context`. Returns the
/// number of objects freed.
pub fn shrink_slab(gfp: Gfp, priority: u32) -> u64 {
    shrink_slab_counted(gfp, priority).freed
}

/// What one [`shrink_slab_counted`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShrinkSlabResult {
    /// Objects freed.
    pub freed: u64,
    /// Objects scanned (the sum of every call's `nr_scanned`).
    pub scanned: u64,
}

/// [`shrink_slab`] that also says how much was scanned: reclaim lowers
/// its priority when a pass scanned less than it set out to reclaim.
pub fn shrink_slab_counted(gfp: Gfp, priority: u32) -> ShrinkSlabResult {
    let mut res = ShrinkSlabResult::default();
    for_each_entry(|e| {
        if e.dead.load(Ordering::Acquire) {
            return;
        }
        let mut sc = ShrinkControl::new(gfp);
        let r = do_shrink_slab(&mut sc, e, priority);
        if r != CountObjects::EMPTY.raw() {
            res.freed += r;
        }
        res.scanned += sc.scanned_total;
    });
    res
}

/// Snapshot of every registered shrinker.
pub fn shrinkers() -> Vec<ShrinkerInfo> {
    let mut out = Vec::new();
    for_each_entry(|e| out.push(info_of(e)));
    out
}

/// [`shrinkers`] that reports failure as a value (`try_reserve`).
pub fn try_shrinkers() -> Result<Vec<ShrinkerInfo>, crate::mm::page_alloc::AllocError> {
    let mut out = Vec::new();
    let mut failed = None;
    for_each_entry(|e| {
        if failed.is_some() {
            return;
        }
        let info = crate::mm::global_alloc::try_string(&e.name).map(|name| ShrinkerInfo {
            name,
            ..info_of_counts(e)
        });
        match info {
            Ok(i) if out.try_reserve(1).is_ok() => out.push(i),
            Ok(_) => failed = Some(crate::mm::fallible::global_alloc_error()),
            Err(e) => failed = Some(e),
        }
    });
    failed.map_or(Ok(out), Err)
}

/// The counters of every registered shrinker summed (empty name; seeks,
/// batch and peak the largest). Allocates nothing, unlike [`shrinkers`]:
/// samples taken during a run must not disturb it or fault injection.
pub fn totals() -> ShrinkerInfo {
    let mut t = info_of_counts_empty();
    for_each_entry(|e| {
        let i = info_of_counts(e);
        t.seeks = t.seeks.max(i.seeks);
        t.batch = t.batch.max(i.batch);
        t.nr_deferred += i.nr_deferred;
        t.calls += i.calls;
        t.scan_calls += i.scan_calls;
        t.scanned += i.scanned;
        t.freed += i.freed;
        t.deferred_peak = t.deferred_peak.max(i.deferred_peak);
        t.stops += i.stops;
        t.violations += i.violations;
    });
    t
}

fn info_of_counts_empty() -> ShrinkerInfo {
    ShrinkerInfo {
        name: String::new(),
        seeks: 0,
        batch: 0,
        nr_deferred: 0,
        calls: 0,
        scan_calls: 0,
        scanned: 0,
        freed: 0,
        deferred_peak: 0,
        stops: 0,
        violations: 0,
    }
}

/// The highest nr_deferred (see [`ShrinkerStats::deferred_peak`]) of the
/// shrinkers named `name` since [`reset_deferred_peak`]. Allocates nothing.
pub fn deferred_peak_of(name: &str) -> u64 {
    let mut peak = 0;
    for_each_entry(|e| {
        if e.name == name {
            peak = peak.max(e.stats.deferred_peak.load(Ordering::Relaxed));
        }
    });
    peak
}

/// Starts a new peak for the shrinkers named `name`: from their nr_deferred
/// now (the start of a measured phase).
pub fn reset_deferred_peak(name: &str) {
    for_each_entry(|e| {
        if e.name == name {
            let now = e.nr_deferred.load(Ordering::Acquire).max(0) as u64;
            e.stats.deferred_peak.store(now, Ordering::Relaxed);
        }
    });
}

/// Prints the shrinker table (for OOM reports and `cargo run`). Allocates
/// nothing, so the out-of-memory report can call it.
pub fn show_shrinkers() {
    crate::println!(
        "{:<24} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "shrinker",
        "seeks",
        "batch",
        "calls",
        "scanned",
        "freed",
        "max defer",
        "pending",
        "stops"
    );
    let reg = REGISTRY.lock();
    for e in reg.iter().flatten() {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::println!(
            "{:<24} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
            e.name,
            e.seeks,
            if e.batch == 0 { SHRINK_BATCH } else { e.batch },
            ld(&e.stats.calls),
            ld(&e.stats.scanned),
            ld(&e.stats.freed),
            ld(&e.stats.deferred_peak),
            e.nr_deferred.load(Ordering::Relaxed),
            ld(&e.stats.stops)
        );
    }
}
