//! `mem=` and `min_free_kbytes=` at boot: this kernel has them built in
//! (`cargo test` passes no kernel arguments), plus memparse and the cap logic.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use kreclaim::bootinfo::{MemoryMap, Region, RegionKind};
use kreclaim::config::memparse;
use kreclaim::harness::TestResult;
use kreclaim::mm::gfp::{GFP_NOWAIT, Gfp};
use kreclaim::mm::page_alloc::{self, PAGE_SIZE, alloc_pages, cap_memory_map, free_pages};
use kreclaim::mm::scope::MemallocScope;
use kreclaim::mm::zone::compute_watermarks;
use kreclaim::{kassert, kassert_eq};

const CAP: u64 = 48 << 20;

kreclaim::kernel_tests!(
    cmdline = "mem=48M min_free_kbytes=2048";
    builtin_cmdline_comes_first,
    mem_caps_the_managed_memory,
    every_page_lies_in_the_lowest_48_mib_of_ram,
    min_free_kbytes_sets_the_watermarks,
    memparse_follows_linux,
    cap_memory_map_keeps_the_lowest_bytes,
);

fn boot() -> &'static kreclaim::bootinfo::BootInfo {
    kreclaim::arch::x86_64::boot_info()
}

fn builtin_cmdline_comes_first() -> TestResult {
    kassert!(
        boot().cmdline().starts_with("mem=48M min_free_kbytes=2048"),
        "'{}'",
        boot().cmdline()
    );
    Ok(())
}

fn mem_caps_the_managed_memory() -> TestResult {
    kassert!(
        boot().usable_bytes() > CAP,
        "the guest needs more than 48 MiB"
    );
    // The mem_map is carved out of the capped RAM.
    let pages = page_alloc::managed_pages() + page_alloc::memmap_pages();
    kassert_eq!(pages, CAP / PAGE_SIZE as u64);
    Ok(())
}

fn every_page_lies_in_the_lowest_48_mib_of_ram() -> TestResult {
    let capped = cap_memory_map(&boot().usable, CAP);
    // The Vec comes from kmalloc (pages): size it before measuring.
    let mut pages = Vec::with_capacity(page_alloc::nr_free_pages() as usize);
    let n0 = page_alloc::nr_free_pages();
    {
        let _noreclaim = MemallocScope::noreclaim();
        while let Ok(p) = alloc_pages(GFP_NOWAIT | Gfp::__GFP_NOWARN, 0) {
            pages.push(p);
        }
    }
    let outside = pages
        .iter()
        .filter(|p| {
            !capped
                .regions()
                .iter()
                .any(|r| r.start <= p.as_u64() && p.as_u64() < r.end)
        })
        .count();
    for p in &pages {
        free_pages(*p, 0);
    }
    kassert_eq!(pages.len() as u64, n0);
    kassert_eq!(outside, 0, "pages above the mem= cap were handed out");
    Ok(())
}

fn min_free_kbytes_sets_the_watermarks() -> TestResult {
    kassert_eq!(page_alloc::min_free_kbytes(), 2048);
    let w = page_alloc::watermarks();
    kassert_eq!(w.min, 512);
    kassert_eq!(w, compute_watermarks(page_alloc::managed_pages(), 2048));
    Ok(())
}

fn memparse_follows_linux() -> TestResult {
    kassert_eq!(memparse("64M"), Ok(64 << 20));
    kassert_eq!(memparse("1G"), Ok(1 << 30));
    kassert_eq!(memparse("512K"), Ok(512 << 10));
    kassert_eq!(memparse("512k"), Ok(512 << 10));
    kassert_eq!(memparse("2t"), Ok(2 << 40));
    kassert_eq!(memparse("4096"), Ok(4096));
    kassert_eq!(memparse("0x1000"), Ok(4096));
    kassert_eq!(memparse("0x10M"), Ok(16 << 20));
    kassert_eq!(memparse("010"), Ok(8), "leading 0 is octal, as in Linux");
    kassert_eq!(memparse("0"), Ok(0));
    for bad in ["bad", "", "M", "64MB", "64 M", "-1", "0x", "99999999999E"] {
        kassert!(memparse(bad).is_err(), "'{bad}' parsed");
    }
    Ok(())
}

fn map(regions: &[(u64, u64)]) -> MemoryMap {
    let mut m = MemoryMap::new();
    for &(start, end) in regions {
        m.push(Region {
            start,
            end,
            kind: RegionKind::Ram,
        });
    }
    m
}

fn cap_memory_map_keeps_the_lowest_bytes() -> TestResult {
    const M: u64 = 1 << 20;
    let m = map(&[(0x1000, 0x9f000), (16 * M, 64 * M), (128 * M, 256 * M)]);
    let low = 0x9e000;
    // Inside the second region.
    let c = cap_memory_map(&m, low + 8 * M);
    kassert_eq!(
        c.regions(),
        map(&[(0x1000, 0x9f000), (16 * M, 24 * M)]).regions()
    );
    // Exactly the first two.
    let c = cap_memory_map(&m, low + 48 * M);
    kassert_eq!(
        c.regions(),
        map(&[(0x1000, 0x9f000), (16 * M, 64 * M)]).regions()
    );
    // Rounded down to pages; more than there is keeps everything.
    let c = cap_memory_map(&m, 0x2fff);
    kassert_eq!(c.regions(), map(&[(0x1000, 0x3000)]).regions());
    kassert_eq!(cap_memory_map(&m, u64::MAX).regions(), m.regions());
    // Non-RAM regions are never handed out.
    let mut with_reserved = m.clone();
    with_reserved.push(Region {
        start: 0x9f000,
        end: 0x100000,
        kind: RegionKind::Reserved,
    });
    kassert_eq!(
        cap_memory_map(&with_reserved, low + M).regions(),
        map(&[(0x1000, 0x9f000), (16 * M, 17 * M)]).regions()
    );
    Ok(())
}
