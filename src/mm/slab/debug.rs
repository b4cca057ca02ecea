//! Slab debugging: poison, red zones, and the reports of misuse, in Linux's
//! words ("BUG kmalloc-64: Poison overwritten"). Every report is recorded so
//! tests can assert on it; the allocator repairs the pattern and carries on.

use super::cache::{CacheInner, SlabFlags};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub const POISON_FREE: u8 = 0x6b;
pub const POISON_END: u8 = 0xa5;
pub const POISON_INUSE: u8 = 0x5a;
pub const RED_ACTIVE: u8 = 0xcc;
pub const RED_INACTIVE: u8 = 0xbb;

/// Kinds of slab misuse detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlabBug {
    /// A free object's poison was written to (use after free).
    PoisonOverwritten,
    /// A red zone was written to (overflow).
    RedzoneOverwritten,
    /// An object freed twice.
    DoubleFree,
    /// An object freed to a cache it does not belong to.
    WrongCache,
    /// A pointer freed that lies in no slab.
    NotASlabObject,
    /// A pointer into a slab that is not an object's start.
    BadOffset,
    /// A free object's free pointer decodes to no free object of its slab
    /// (overwritten after free); the rest of that slab's free list is
    /// abandoned.
    FreePointerCorrupt,
    /// A cache destroyed with objects still allocated.
    LiveObjectsAtDestroy,
    /// `kmalloc_aligned` with an alignment that is not a power of two.
    BadAlign,
}

/// One recorded report.
#[derive(Debug, Clone)]
pub struct SlabReport {
    /// What went wrong.
    pub bug: SlabBug,
    /// The cache it happened in.
    pub cache: String,
    /// The object's (or bad pointer's) address.
    pub addr: usize,
    /// Offset in the object of the first bad byte, when the check finds one
    /// inside or after the object (`None` for a left red zone, before it).
    pub offset: Option<usize>,
    /// The report's title as printed after the cache name, in Linux's
    /// words ("Left Redzone overwritten", "Freepointer corrupt").
    pub what: String,
}

static REPORTS: spin::Mutex<Vec<SlabReport>> = spin::Mutex::new(Vec::new());

/// Every slab report since boot.
pub fn reports() -> Vec<SlabReport> {
    crate::platform::without_interrupts(|| REPORTS.lock().clone())
}

pub(crate) fn record(bug: SlabBug, cache: &str) {
    push(SlabReport {
        bug,
        cache: String::from(cache),
        addr: 0,
        offset: None,
        what: alloc::format!("{bug:?}"),
    });
}

fn push(r: SlabReport) {
    crate::platform::without_interrupts(|| REPORTS.lock().push(r));
}

#[track_caller]
pub(crate) fn report(
    c: &CacheInner,
    bug: SlabBug,
    addr: usize,
    offset: Option<usize>,
    what: fmt::Arguments,
) {
    crate::println!(
        "============================================================================="
    );
    crate::println!("BUG {}: {}", c.name, what);
    crate::println!(
        "-----------------------------------------------------------------------------"
    );
    match offset {
        Some(off) => crate::println!(
            "Object {addr:#x} @offset={off} (size {}), caller {} in task '{}'",
            c.object_size,
            core::panic::Location::caller(),
            crate::task::current().name()
        ),
        None => crate::println!(
            "Object {addr:#x}, caller {} in task '{}'",
            core::panic::Location::caller(),
            crate::task::current().name()
        ),
    }
    crate::println!(
        "FIX {}: the bad access was reported; the allocator state is left intact",
        c.name
    );
    push(SlabReport {
        bug,
        cache: c.name.clone(),
        addr,
        offset,
        what: alloc::format!("{what}"),
    });
}

/// The bytes `[obj, obj + len)` of a slab object slot.
///
/// # Safety
/// The range must lie inside one object slot (object and red zone) of a live
/// slab, and nothing else may access those bytes while the result is used.
unsafe fn bytes<'a>(obj: usize, len: usize) -> &'a mut [u8] {
    // SAFETY: the range is valid, writable slab memory used by nobody else,
    // per the contract.
    unsafe { core::slice::from_raw_parts_mut(obj as *mut u8, len) }
}

/// # Safety
/// `obj` must be an object slot of a live slab of `c` that nobody else uses
/// (free, or being allocated or freed by the caller).
unsafe fn poison(c: &CacheInner, obj: usize) {
    if c.flags.contains(SlabFlags::POISON) && c.object_size > 0 {
        // SAFETY: the object proper of a slot the caller owns.
        let b = unsafe { bytes(obj, c.object_size) };
        b.fill(POISON_FREE);
        b[c.object_size - 1] = POISON_END;
    }
}

/// # Safety
/// As for [`poison`].
unsafe fn set_redzone(c: &CacheInner, obj: usize, v: u8) {
    if c.flags.contains(SlabFlags::RED_ZONE) {
        // SAFETY: with RED_ZONE the slot holds `red_left_pad` red-zone bytes
        // right before the object and `rz_len` right after it, and the
        // caller owns the slot.
        unsafe {
            bytes(obj - c.red_left_pad, c.red_left_pad).fill(v);
            bytes(obj + c.object_size, c.rz_len).fill(v);
        }
    }
}

/// The offset from `obj` of the first byte of its left red zone that is
/// not `v` (negative: before the object), if any.
///
/// # Safety
/// As for [`poison`], with `RED_ZONE` set.
unsafe fn check_left_redzone(c: &CacheInner, obj: usize, v: u8) -> Option<isize> {
    // SAFETY: the left red zone of a slot the caller owns.
    let rz = unsafe { bytes(obj - c.red_left_pad, c.red_left_pad) };
    rz.iter()
        .position(|b| *b != v)
        .map(|i| i as isize - c.red_left_pad as isize)
}

/// A fresh free object: poisoned, inactive red zone.
///
/// # Safety
/// `obj` must be an object slot of a new slab of `c` that nothing uses yet.
pub(crate) unsafe fn init_free_object(c: &CacheInner, obj: usize) {
    // SAFETY: the caller owns this slot of a live slab of `c`.
    unsafe {
        poison(c, obj);
        set_redzone(c, obj, RED_INACTIVE);
    }
}

/// Checks a free object about to be handed out (poison intact: no write
/// after free; red zone inactive), then arms its red zone.
///
/// # Safety
/// `obj` must be an object slot of a live slab of `c` that the caller has
/// just taken off the free list (so nobody else uses it).
#[track_caller]
pub(crate) unsafe fn check_on_alloc(c: &CacheInner, obj: usize) {
    if c.flags.contains(SlabFlags::POISON) && c.object_size > 0 {
        // SAFETY: the object proper of a slot the caller owns.
        let b = unsafe { bytes(obj, c.object_size) };
        let last = c.object_size - 1;
        if let Some(off) = b
            .iter()
            .enumerate()
            .position(|(i, v)| *v != if i == last { POISON_END } else { POISON_FREE })
        {
            report(
                c,
                SlabBug::PoisonOverwritten,
                obj,
                Some(off),
                format_args!("Poison overwritten"),
            );
        }
    }
    if c.flags.contains(SlabFlags::RED_ZONE) {
        // SAFETY: with RED_ZONE the slot holds a left red zone, and the
        // caller owns the slot.
        if unsafe { check_left_redzone(c, obj, RED_INACTIVE) }.is_some() {
            report(
                c,
                SlabBug::RedzoneOverwritten,
                obj,
                None,
                format_args!("Left Redzone overwritten"),
            );
        }
        // SAFETY: with RED_ZONE the slot holds `rz_len` red-zone bytes after
        // the object, and the caller owns the slot.
        let rz = unsafe { bytes(obj + c.object_size, c.rz_len) };
        if let Some(off) = rz.iter().position(|v| *v != RED_INACTIVE) {
            report(
                c,
                SlabBug::RedzoneOverwritten,
                obj,
                Some(c.object_size + off),
                format_args!("Right Redzone overwritten"),
            );
        }
    }
    // SAFETY: the caller owns the slot.
    unsafe { set_redzone(c, obj, RED_ACTIVE) };
}

/// Checks an object being freed (red zones intact: no underflow or
/// overflow), then poisons it. Runs under the cache's list lock, so it only
/// returns the offset from the object of the first bad red-zone byte
/// (negative in the left red zone): the caller reports after dropping the
/// lock, as a report allocates and the allocation may come from this very
/// cache.
///
/// # Safety
/// `obj` must be an allocated object slot of a live slab of `c` that is
/// being freed under the list lock: its owner has given it up.
pub(crate) unsafe fn check_and_poison_on_free(c: &CacheInner, obj: usize) -> Option<isize> {
    let mut bad = None;
    if c.flags.contains(SlabFlags::RED_ZONE) {
        // The left red zone (SLUB's "Left Redzone"), kmalloc's slack after
        // the size asked for ("kmalloc Redzone"), then the red zone after
        // the object ("Right Redzone").
        // SAFETY: with RED_ZONE the slot has a left red zone; the caller
        // owns the slot.
        bad = unsafe { check_left_redzone(c, obj, RED_ACTIVE) };
        let orig = c.orig_size(obj);
        if bad.is_none() {
            // SAFETY: `orig <= object_size`, so this is the tail of the
            // object proper, in a slot the caller owns.
            bad = unsafe { bytes(obj + orig, c.object_size - orig) }
                .iter()
                .position(|v| *v != RED_ACTIVE)
                .map(|off| (orig + off) as isize);
        }
        if bad.is_none() {
            // SAFETY: the red zone after the object, in a slot the caller owns.
            let rz = unsafe { bytes(obj + c.object_size, c.rz_len) };
            bad = rz
                .iter()
                .position(|v| *v != RED_ACTIVE)
                .map(|off| (c.object_size + off) as isize);
        }
    }
    // SAFETY: the caller owns the slot being freed.
    unsafe {
        poison(c, obj);
        set_redzone(c, obj, RED_INACTIVE);
    }
    bad
}
