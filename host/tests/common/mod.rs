//! Shared by the property-test binaries (each its own process, so each
//! brings the allocator up once).

#![allow(dead_code)]

use kreclaim_host::{Config, Host};
use proptest::test_runner::{Config as PtConfig, FileFailurePersistence};
use std::collections::BTreeMap;

/// Cases per property: `PROPTEST_CASES` or 10,000.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

pub fn config() -> PtConfig {
    PtConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        // Failing seeds go to tests/<name>.regressions, replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..PtConfig::default()
    }
}

/// Brings kreclaim up over a 64 MiB arena (once per process), console quiet
/// (failure reports are counted, not printed).
pub fn host() -> Host {
    kreclaim_host::init(Config {
        arena_bytes: 64 << 20,
        quiet: true,
        ..Config::default()
    })
    .expect("host bring-up")
}

/// Live allocations as `start -> (end, tag)`; inserting checks overlap.
#[derive(Default)]
pub struct Extents(pub BTreeMap<usize, (usize, u64)>);

impl Extents {
    /// Adds `[start, end)`; panics (failing the case) if it overlaps a live one.
    pub fn insert(&mut self, start: usize, end: usize, tag: u64) {
        assert!(start < end);
        if let Some((&s, &(e, _))) = self.0.range(..end).next_back() {
            assert!(
                e <= start || s >= end,
                "[{start:#x}, {end:#x}) overlaps live [{s:#x}, {e:#x})"
            );
        }
        assert!(self.0.insert(start, (end, tag)).is_none());
    }

    pub fn remove(&mut self, start: usize) -> (usize, u64) {
        self.0.remove(&start).expect("not live")
    }

    /// The live extent containing `addr`, if any.
    pub fn containing(&self, addr: usize) -> Option<(usize, usize)> {
        self.0
            .range(..=addr)
            .next_back()
            .filter(|(_, (e, _))| addr < *e)
            .map(|(&s, &(e, _))| (s, e))
    }
}

/// Writes a pattern derived from `tag` at up to 4 spots of `[p, p + len)`:
/// first, last and two in between (whole blocks would make 4 MiB writes).
pub fn stamp(p: usize, len: usize, tag: u64) {
    for (i, off) in spots(len).into_iter().enumerate() {
        // SAFETY: inside a live allocation of `len` bytes.
        unsafe {
            (p as *mut u8)
                .add(off)
                .write(tag.wrapping_add(i as u64) as u8)
        };
    }
}

/// Checks the pattern of [`stamp`]: nobody else wrote into the block.
pub fn check_stamp(p: usize, len: usize, tag: u64) {
    for (i, off) in spots(len).into_iter().enumerate() {
        // SAFETY: inside a live allocation of `len` bytes.
        let v = unsafe { (p as *const u8).add(off).read() };
        assert_eq!(
            v,
            tag.wrapping_add(i as u64) as u8,
            "block {p:#x}+{off} was overwritten while live"
        );
    }
}

fn spots(len: usize) -> [usize; 4] {
    [0, len / 3, 2 * len / 3, len - 1]
}

/// Fills the whole object with a pattern (small objects only).
pub fn fill(p: usize, len: usize, tag: u64) {
    // SAFETY: a live object of `len` bytes.
    let s = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
    for (i, b) in s.iter_mut().enumerate() {
        *b = (tag as u8).wrapping_add(i as u8);
    }
}

pub fn check_fill(p: usize, len: usize, tag: u64) {
    // SAFETY: a live object of `len` bytes.
    let s = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    for (i, b) in s.iter().enumerate() {
        assert_eq!(
            *b,
            (tag as u8).wrapping_add(i as u8),
            "object {p:#x}+{i} (of {len}) was overwritten while live"
        );
    }
}
