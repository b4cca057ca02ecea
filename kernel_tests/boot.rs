//! Boot: memory map, command line, paging, timer and clock.

#![no_std]
#![no_main]

extern crate alloc;

use kreclaim::arch::x86_64::{paging, stacks, timer};
use kreclaim::bootinfo::{BootInfo, CmdlineProblem, MAX_CMDLINE, RegionKind};
use kreclaim::config::{CmdlineError, Config};
use kreclaim::harness::TestResult;
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    memmap_has_100_mib_usable,
    memmap_usable_avoids_kernel_image_and_page_zero,
    memmap_usable_is_page_aligned_sorted_and_disjoint,
    memmap_usable_lies_in_firmware_ram,
    cmdline_parses_good_input,
    cmdline_rejects_unknown_key_naming_it,
    cmdline_rejects_bad_value,
    cmdline_rejects_bare_word,
    cmdline_empty_gives_defaults,
    cmdline_workload_keys,
    cmdline_policy_knobs_override_the_era,
    cmdline_bad_knob_or_value_lists_the_valid_ones,
    cmdline_disk_model_keys,
    cmdline_too_long_or_not_utf8_is_a_problem,
    cmdline_file_size_limit_is_the_one_stated,
    cmdline_min_free_kbytes_has_a_floor,
    cmdline_dash_tokens_are_refused_not_dropped,
    direct_map_reaches_all_usable_ram,
    kernel_image_has_w_xor_x,
    stack_guard_pages_are_unmapped,
    low_memory_outside_the_image_is_unmapped,
    timer_ticks_while_cpu_halts,
    clock_is_monotonic_and_tracks_ticks,
    heap_allocates_and_frees,
    early_heap_is_outside_the_image_and_the_usable_map,
    json_writer_escapes_per_rfc8259,
    json_config_gives_every_key_as_resolved,
);

fn boot() -> &'static BootInfo {
    kreclaim::arch::x86_64::boot_info()
}

const MIB: u64 = 1 << 20;

fn memmap_has_100_mib_usable() -> TestResult {
    let usable = boot().usable_bytes();
    kassert!(usable >= 100 * MIB, "only {} MiB usable", usable / MIB);
    kassert!(usable <= boot().ram_bytes());
    Ok(())
}

fn memmap_usable_avoids_kernel_image_and_page_zero() -> TestResult {
    let (ks, ke) = paging::kernel_image();
    kassert!(ke > ks);
    for r in boot().usable.regions() {
        kassert!(
            !r.overlaps(ks, ke),
            "{r:?} overlaps the kernel image [{ks:#x}, {ke:#x})"
        );
        kassert!(!r.overlaps(0, 4096), "{r:?} contains page 0");
    }
    Ok(())
}

fn memmap_usable_is_page_aligned_sorted_and_disjoint() -> TestResult {
    let regions = boot().usable.regions();
    kassert!(!regions.is_empty());
    for r in regions {
        kassert_eq!(r.start % 4096, 0);
        kassert_eq!(r.end % 4096, 0);
        kassert!(r.end > r.start);
        kassert_eq!(r.kind, RegionKind::Ram);
    }
    for w in regions.windows(2) {
        kassert!(
            w[0].end <= w[1].start,
            "{:?} and {:?} overlap or are unsorted",
            w[0],
            w[1]
        );
    }
    Ok(())
}

fn memmap_usable_lies_in_firmware_ram() -> TestResult {
    for r in boot().usable.regions() {
        let inside = boot()
            .firmware_map
            .regions()
            .iter()
            .any(|f| f.kind == RegionKind::Ram && f.start <= r.start && r.end <= f.end);
        kassert!(inside, "{r:?} is not inside a firmware RAM region");
    }
    Ok(())
}

fn cmdline_parses_good_input() -> TestResult {
    let c = Config::parse("  loglevel=debug   loglevel=warn ")
        .map_err(|e| kreclaim::harness::TestFailure::new(alloc::format!("rejected: {e}")))?;
    kassert_eq!(c.loglevel, log::LevelFilter::Warn, "the later token wins");
    Ok(())
}

fn cmdline_rejects_unknown_key_naming_it() -> TestResult {
    let e = Config::parse("loglevel=info bogus=1").unwrap_err();
    kassert!(
        matches!(&e, CmdlineError::UnknownKey { key, .. } if key == "bogus"),
        "{e:?}"
    );
    let msg = alloc::format!("{e}");
    kassert!(msg.contains("'bogus'"), "{msg}");
    kassert!(msg.contains("valid keys: loglevel"), "{msg}");
    Ok(())
}

fn cmdline_rejects_bad_value() -> TestResult {
    let e = Config::parse("loglevel=chatty").unwrap_err();
    kassert!(
        matches!(
            e,
            CmdlineError::BadValue {
                key: "loglevel",
                ..
            }
        ),
        "{e:?}"
    );
    kassert!(alloc::format!("{e}").contains("loglevel=chatty"));
    Ok(())
}

fn cmdline_rejects_bare_word() -> TestResult {
    let e = Config::parse("quiet").unwrap_err();
    kassert!(
        matches!(&e, CmdlineError::NotKeyValue { token } if token == "quiet"),
        "{e:?}"
    );
    Ok(())
}

fn cmdline_empty_gives_defaults() -> TestResult {
    kassert_eq!(Config::parse("").unwrap(), Config::default());
    kassert_eq!(Config::default().loglevel, log::LevelFilter::Info);
    Ok(())
}

fn cmdline_workload_keys() -> TestResult {
    use kreclaim::config::PolicyChoice;
    use kreclaim::fs::policy::Policy;
    let c = Config::parse("policy=kernel files=100 file_size=4K-8K fanout=10 mix=read:50,write:30 tasks=2 ops=10 seed=7")
        .map_err(|e| kreclaim::harness::TestFailure::new(alloc::format!("{e}")))?;
    kassert_eq!(c.policy, PolicyChoice::One(Policy::KERNEL));
    kassert_eq!(
        (c.workload.files, c.workload.size_min, c.workload.size_max),
        (100, 4096, 8192)
    );
    kassert_eq!(
        (
            c.workload.fanout,
            c.workload.tasks,
            c.workload.ops,
            c.workload.seed
        ),
        (10, 2, 10, 7)
    );
    kassert_eq!(
        (
            c.workload.mix.read,
            c.workload.mix.write,
            c.workload.mix.unlink
        ),
        (50, 30, 0)
    );
    // The application's memory per operation: 16 pages unless asked (0:
    // the fs-only workload), and printed with the other workload keys.
    kassert_eq!(c.workload.app_pages, 16);
    kassert!(alloc::format!("{c}").contains(" app_pages=16"), "{c}");
    for (line, want) in [("app_pages=0", 0), ("app_pages=1024", 1024)] {
        let c = Config::parse(line)
            .map_err(|e| kreclaim::harness::TestFailure::new(alloc::format!("{e}")))?;
        kassert_eq!(c.workload.app_pages, want, "{line}");
        let shown = alloc::format!("{c}");
        kassert!(
            shown.contains(&alloc::format!(" app_pages={want}")),
            "{shown}"
        );
    }
    let c = Config::parse("app_pages=0 app_pages=32")
        .map_err(|e| kreclaim::harness::TestFailure::new(alloc::format!("{e}")))?;
    kassert_eq!(c.workload.app_pages, 32, "the last app_pages= wins");
    let e = alloc::format!("{}", Config::parse("app_pages=5000").unwrap_err());
    kassert!(e.contains("app_pages takes pages, 0..=1024"), "{e}");
    kassert_eq!(
        Config::parse("policy=all").unwrap().policy,
        PolicyChoice::All
    );
    for bad in [
        "policy=fast",
        "files=0",
        "file_size=8K-4K",
        "mix=read:90,write:20",
        "tasks=0",
        "mix=eat:5",
        "ops=-1",
        "app_pages=1025",
        "app_pages=-1",
        "app_pages=lots",
    ] {
        let e = Config::parse(bad).unwrap_err();
        kassert!(matches!(e, CmdlineError::BadValue { .. }), "{bad}: {e:?}");
    }
    Ok(())
}

fn cmdline_policy_knobs_override_the_era() -> TestResult {
    use kreclaim::fs::policy::{IlockMode, Policy, ReclaimPinned, ReclaimWriteback};
    use kreclaim::mm::gfp::GFP_KERNEL;
    let fail = |e: CmdlineError| kreclaim::harness::TestFailure::new(alloc::format!("{e}"));
    // The default era is `today`.
    kassert_eq!(Config::parse("").map_err(fail)?.policies(), [Policy::TODAY]);
    // A knob overrides the era whichever comes first; the era's name stays.
    for line in [
        "policy=today reclaim_final_lock=off buf_gfp=kernel",
        "buf_gfp=kernel reclaim_final_lock=off policy=today",
    ] {
        let p = Config::parse(line).map_err(fail)?.policies();
        kassert_eq!(p.len(), 1);
        kassert_eq!(p[0].name, "today");
        kassert!(!p[0].reclaim_final_lock, "{line}");
        kassert_eq!(p[0].buf_gfp, GFP_KERNEL);
        kassert_eq!(p[0].gfp_under_ilock, Policy::TODAY.gfp_under_ilock);
        let shown = alloc::format!("{}", p[0].knobs());
        kassert!(
            shown.contains("reclaim_final_lock=off") && shown.contains("buf_gfp=kernel"),
            "{shown}"
        );
    }
    // Every knob, each value, on `policy=all`: applied to every era.
    let c = Config::parse(
        "policy=all ilock_gfp=nofs inode_gfp=nofs trans_nofs=off reclaim_ilock=blocking reclaim_writeback=sync \
         reclaim_pinned=wait cluster_ilock=blocking reclaim_referenced=on reclaim_subclass=on",
    )
    .map_err(fail)?;
    let ps = c.policies();
    kassert_eq!(ps.len(), Policy::ALL.len());
    for p in &ps {
        kassert_eq!(p.gfp_under_ilock, kreclaim::mm::gfp::GFP_NOFS);
        kassert_eq!(p.inode_gfp, kreclaim::mm::gfp::GFP_NOFS);
        kassert!(!p.scoped_nofs_transactions);
        kassert_eq!(p.reclaim_ilock, IlockMode::Blocking);
        kassert_eq!(p.reclaim_writeback, ReclaimWriteback::Sync);
        kassert_eq!(p.reclaim_pinned, ReclaimPinned::Wait);
        kassert_eq!(p.cluster_ilock, IlockMode::Blocking);
        kassert!(p.reclaim_flushes_referenced && p.reclaim_subclass);
    }
    kassert!(alloc::format!("{c}").contains("reclaim_subclass=on"), "{c}");
    // The eras differ where the history says.
    kassert_eq!(Policy::by_name("today"), Some(Policy::TODAY));
    kassert!(Policy::TODAY.reclaim_final_lock && !Policy::TRYLOCK.reclaim_final_lock);
    kassert_eq!(Policy::NOFS.reclaim_writeback, ReclaimWriteback::Sync);
    kassert_eq!(Policy::TODAY.reclaim_writeback, ReclaimWriteback::None);
    kassert_eq!(Policy::KERNEL.reclaim_pinned, ReclaimPinned::Wait);
    kassert_eq!(Policy::TRYLOCK.reclaim_pinned, ReclaimPinned::Skip);
    kassert!(
        alloc::format!("{}", Policy::TODAY.knobs()).contains("reclaim_pinned=skip"),
        "{}",
        Policy::TODAY.knobs()
    );
    kassert!(Policy::ALL.iter().all(|p| !p.reclaim_subclass));
    Ok(())
}

fn cmdline_bad_knob_or_value_lists_the_valid_ones() -> TestResult {
    let e = Config::parse("policy=today reclaim_final_lock=maybe").unwrap_err();
    let text = alloc::format!("{e}");
    kassert!(matches!(e, CmdlineError::BadValue { .. }), "{e:?}");
    kassert!(
        text.contains("'reclaim_final_lock=maybe'") && text.contains("on|off"),
        "{text}"
    );
    kassert!(!text.contains('\n'), "{text}");
    let e = Config::parse("policy=nofs reclaim_pinned=maybe").unwrap_err();
    kassert!(alloc::format!("{e}").contains("wait|skip"), "{e}");
    let e = Config::parse("buf_gfp=atomic").unwrap_err();
    kassert!(
        alloc::format!("{e}").contains("kernel|nofs|kernel+nolockdep"),
        "{e}"
    );
    // An unknown key's error lists the knobs among the valid keys.
    let e = Config::parse("reclaim_final=off").unwrap_err();
    let text = alloc::format!("{e}");
    kassert!(matches!(e, CmdlineError::UnknownKey { .. }), "{e:?}");
    for k in kreclaim::fs::policy::KNOBS {
        kassert!(text.contains(k.name), "{} missing: {text}", k.name);
    }
    Ok(())
}

fn cmdline_disk_model_keys() -> TestResult {
    use kreclaim::fs::DiskModel;
    kassert_eq!(Config::default().disk, DiskModel::SATA_SSD);
    let c = Config::parse("disk_lat=250 disk_bw=100 disk_flush=3000").unwrap();
    kassert_eq!(
        c.disk,
        DiskModel {
            lat_us: 250,
            bw_mbps: 100,
            flush_us: 3000,
        }
    );
    kassert_eq!(DiskModel::SATA_SSD.flush_us, 1000);
    kassert!(Config::parse("disk_lat=0").unwrap().disk.is_instant());
    kassert!(!DiskModel::SATA_SSD.is_instant());
    // 4 KiB at 500 MB/s: 8192 ns.
    kassert_eq!(DiskModel::SATA_SSD.transfer_ns(4096), 8192);
    for bad in [
        "disk_lat=-1",
        "disk_lat=fast",
        "disk_bw=2000000",
        "disk_flush=2000000",
        "disk_flush=",
    ] {
        let e = Config::parse(bad).unwrap_err();
        kassert!(matches!(e, CmdlineError::BadValue { .. }), "{bad}: {e:?}");
    }
    Ok(())
}

fn cmdline_too_long_or_not_utf8_is_a_problem() -> TestResult {
    // Boot refuses these (one line, non-zero exit) instead of keeping part.
    let mut b = alloc::boxed::Box::new(BootInfo::new());
    b.set_cmdline(&[b'x'; MAX_CMDLINE]);
    kassert_eq!(b.cmdline_problem(), None);
    b.set_cmdline(&[b'x'; MAX_CMDLINE + 1]);
    kassert_eq!(
        b.cmdline_problem(),
        Some(CmdlineProblem::TooLong {
            len: MAX_CMDLINE + 1
        })
    );
    // A built-in part that pushes a fitting command line over the limit.
    b.set_cmdline(&[b'x'; MAX_CMDLINE - 4]);
    b.prepend_cmdline("mem=16M");
    kassert_eq!(
        b.cmdline_problem(),
        Some(CmdlineProblem::TooLong {
            len: MAX_CMDLINE + 4
        })
    );
    b.set_cmdline(b"seed=1");
    b.prepend_cmdline("mem=16M");
    kassert_eq!(b.cmdline(), "mem=16M seed=1");
    kassert_eq!(b.cmdline_problem(), None);
    b.set_cmdline(b"seed=\xff1 files=2");
    kassert_eq!(
        b.cmdline_problem(),
        Some(CmdlineProblem::NotUtf8 {
            offset: 5,
            byte: 0xff
        })
    );
    let line = alloc::format!("{}", b.cmdline_problem().unwrap());
    kassert!(
        line.contains("not UTF-8") && line.contains("0xff"),
        "{line}"
    );
    Ok(())
}

fn cmdline_file_size_limit_is_the_one_stated() -> TestResult {
    use kreclaim::workload::FILE_SIZE_MAX;
    let max_k = FILE_SIZE_MAX >> 10;
    let help = kreclaim::config::KEYS
        .iter()
        .find(|k| k.name == "file_size")
        .unwrap()
        .values;
    kassert!(
        help.contains(&alloc::format!("at most {max_k}K")),
        "help '{help}' does not state {max_k}K"
    );
    // The workload reads a file into one kmalloc buffer of size + 1 bytes.
    kassert!(FILE_SIZE_MAX < 4 << 20);
    let c = Config::parse(&alloc::format!("file_size=4K-{max_k}K")).unwrap();
    kassert_eq!(c.workload.size_max as u64, FILE_SIZE_MAX);
    for bad in [
        alloc::format!("file_size={}K", max_k + 1),
        alloc::format!("file_size=4K-{}", FILE_SIZE_MAX + 1),
        alloc::string::String::from("file_size=4256K"),
    ] {
        let e = Config::parse(&bad).map(|c| c.workload.size_max);
        kassert!(
            matches!(e, Err(CmdlineError::BadValue { .. })),
            "{bad}: {e:?}"
        );
    }
    Ok(())
}

fn cmdline_min_free_kbytes_has_a_floor() -> TestResult {
    for bad in ["min_free_kbytes=0", "min_free_kbytes=127"] {
        match Config::parse(bad) {
            Err(e @ CmdlineError::BadValue { .. }) => {
                kassert!(alloc::format!("{e}").contains("128.."), "{e}")
            }
            other => kassert!(false, "{bad}: {:?}", other.map(|c| c.min_free_kbytes)),
        }
    }
    kassert_eq!(
        Config::parse("min_free_kbytes=128")
            .unwrap()
            .min_free_kbytes,
        Some(128)
    );
    Ok(())
}

fn cmdline_dash_tokens_are_refused_not_dropped() -> TestResult {
    // A test kernel's bare words are filters; '-x' is neither a filter nor
    // a key and used to vanish. It now reaches the parser, which refuses it.
    let (filters, rest) = kreclaim::harness::split_cmdline("boot --nocapture seed=1");
    kassert_eq!(filters, alloc::vec!["boot"]);
    let e = Config::parse(&rest).map(|c| c.workload.seed);
    kassert!(
        matches!(&e, Err(CmdlineError::NotKeyValue { token }) if token == "--nocapture"),
        "{e:?}"
    );
    Ok(())
}

fn direct_map_reaches_all_usable_ram() -> TestResult {
    for r in boot().usable.regions() {
        for pa in [r.start, r.end - 8, r.start + ((r.len() / 2) & !7)] {
            let p = paging::phys_to_virt(pa) as *mut u64;
            kassert!(paging::translate(p as u64).map(|(phys, _)| phys) == Some(pa));
            // SAFETY: usable RAM, owned by nobody yet; restored right after.
            unsafe {
                let old = p.read_volatile();
                p.write_volatile(0x5eed_0000_0000_0000 | pa);
                kassert_eq!(p.read_volatile(), 0x5eed_0000_0000_0000 | pa);
                p.write_volatile(old);
            }
        }
    }
    Ok(())
}

fn kernel_image_has_w_xor_x() -> TestResult {
    let text = kernel_image_has_w_xor_x as *const () as u64;
    let (_, tf) = paging::translate(text).unwrap();
    kassert!(tf & paging::WRITABLE == 0, "text is writable: {tf:#x}");
    kassert!(tf & paging::NO_EXECUTE == 0, "text is not executable");
    static RODATA: [u8; 4] = *b"ro!!";
    let (_, rf) = paging::translate(RODATA.as_ptr() as u64).unwrap();
    kassert!(rf & paging::WRITABLE == 0, "rodata is writable: {rf:#x}");
    kassert!(
        rf & paging::NO_EXECUTE != 0,
        "rodata is executable: {rf:#x}"
    );
    static mut DATA: u64 = 1;
    let (_, df) = paging::translate(&raw const DATA as u64).unwrap();
    kassert!(df & paging::WRITABLE != 0, "data is read-only");
    kassert!(df & paging::NO_EXECUTE != 0, "data is executable");
    Ok(())
}

fn stack_guard_pages_are_unmapped() -> TestResult {
    for (name, guard, top) in stacks::static_stacks() {
        kassert!(
            paging::translate(guard as u64).is_none(),
            "guard of '{name}' is mapped"
        );
        kassert!(
            paging::translate(guard as u64 + 4096).is_some(),
            "bottom of '{name}' unmapped"
        );
        kassert!(
            paging::translate(top as u64 - 8).is_some(),
            "top of '{name}' unmapped"
        );
        kassert!(
            stacks::guard_page_owner(guard as u64 + 100).is_some_and(|n| n == name),
            "guard of '{name}'"
        );
    }
    let here = &0u8 as *const u8 as u64;
    kassert!(stacks::guard_page_owner(here).is_none());
    Ok(())
}

fn low_memory_outside_the_image_is_unmapped() -> TestResult {
    kassert!(paging::translate(0).is_none(), "page 0 is mapped");
    kassert!(paging::translate(0xdead_b000).is_none());
    let (_, ke) = paging::kernel_image();
    kassert!(
        paging::translate(ke).is_none(),
        "the page after the image is mapped"
    );
    Ok(())
}

fn timer_ticks_while_cpu_halts() -> TestResult {
    let t0 = timer::ticks();
    let c0 = kreclaim::time::now_ns();
    for _ in 0..20 {
        // Interrupts are on; hlt returns at the next tick.
        x86_64::instructions::hlt();
    }
    let t1 = timer::ticks();
    let c1 = kreclaim::time::now_ns();
    kassert!(t1 >= t0 + 20, "ticks went {t0} -> {t1} over 20 halts");
    kassert!(c1 > c0, "clock stood still: {c0} -> {c1}");
    Ok(())
}

fn clock_is_monotonic_and_tracks_ticks() -> TestResult {
    kassert!(timer::tsc_per_ms() > 0, "TSC not calibrated");
    let mut last = kreclaim::time::now_ns();
    for _ in 0..10_000 {
        let now = kreclaim::time::now_ns();
        kassert!(now >= last, "clock went backwards: {last} -> {now}");
        last = now;
    }
    // Over 50 ticks (50 ms) the clock moves by roughly as much; allow wide
    // slack since TCG timing is noisy, but catch a wrong scale. A host that
    // deschedules QEMU makes it deliver the missed ticks in a burst (50
    // ticks seen in 11 ms under load), so one of three tries must agree: a
    // wrong scale fails all three.
    let mut seen = [0u64; 3];
    for m in seen.iter_mut() {
        let t0 = timer::ticks();
        let c0 = kreclaim::time::now_ns();
        while timer::ticks() < t0 + 50 {
            x86_64::instructions::hlt();
        }
        *m = (kreclaim::time::now_ns() - c0) / 1_000_000;
        if (25..=500).contains(m) {
            return Ok(());
        }
    }
    kassert!(false, "50 ticks measured as {seen:?} ms in three tries");
    Ok(())
}

fn heap_allocates_and_frees() -> TestResult {
    // Once kmalloc is up, Rust's heap is kmalloc: the early heap is untouched.
    let (used0, total) = kreclaim::arch::x86_64::early_heap().usage();
    kassert!(total > 0);
    let v: alloc::vec::Vec<u64> = (0..1000).collect();
    kassert_eq!(v.iter().sum::<u64>(), 999 * 1000 / 2);
    kassert_eq!(
        kreclaim::mm::slab::kmalloc::ksize(v.as_ptr().cast()),
        8192,
        "not served by kmalloc-8k"
    );
    kassert_eq!(kreclaim::arch::x86_64::early_heap().usage().0, used0);
    drop(v);
    Ok(())
}

fn early_heap_is_outside_the_image_and_the_usable_map() -> TestResult {
    // The image must stay small for small guests: the early heap once made
    // it 10 MiB, and -m 10M hung. The heap comes from RAM taken at boot.
    let (ks, ke) = paging::kernel_image();
    kassert!(
        ke - ks < 4 * MIB,
        "the kernel image is {} KiB",
        (ke - ks) >> 10
    );
    let heap = kreclaim::arch::x86_64::early_heap();
    let layout = core::alloc::Layout::from_size_align(64, 8).unwrap();
    let p = heap.alloc(layout).expect("the early heap is empty");
    let pa = paging::virt_to_phys(p.as_ptr() as u64);
    // SAFETY: allocated just above with this layout.
    unsafe { heap.dealloc(p, layout) };
    kassert!(
        !(ks..ke).contains(&pa),
        "early heap at {pa:#x} is in the image"
    );
    for r in boot().usable.regions() {
        kassert!(
            !r.overlaps(pa, pa + 64),
            "early heap at {pa:#x} is in usable {r:?}"
        );
    }
    Ok(())
}

/// format=json's writer: RFC 8259 escaping (every control character,
/// quotes, backslashes; UTF-8 passed through), commas in nested
/// containers, and no NaN or infinity (JSON has neither).
fn json_writer_escapes_per_rfc8259() -> TestResult {
    use alloc::string::String;
    use kreclaim::report::JsonWriter;
    let mut out = String::new();
    let mut j = JsonWriter::new(&mut out);
    let controls: String = (0u8..0x20).map(char::from).collect();
    j.begin_object()
        .field_str("k\"ey\\", "a\"b\\c/é\u{2028}\u{7f}")
        .field_str("ctl", &controls)
        .key("arr")
        .begin_array()
        .u64(1)
        .begin_object()
        .end_object()
        .begin_array()
        .end_array()
        .i64(-2)
        .null()
        .bool(false)
        .end_array()
        .key("nan")
        .f64(f64::NAN, 1)
        .key("inf")
        .f64(f64::INFINITY, 1)
        .key("x")
        .f64(2.5, 1)
        .key("d")
        .display(format_args!("{}\n", "t\tab"))
        .end_object();
    kassert!(j.finish().is_ok());
    let expected = concat!(
        "{\"k\\\"ey\\\\\":\"a\\\"b\\\\c/é\u{2028}\u{7f}\",",
        r#""ctl":"\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f"#,
        r#"\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f","#,
        r#""arr":[1,{},[],-2,null,false],"nan":null,"inf":null,"x":2.5,"d":"t\tab\n"}"#
    );
    kassert_eq!(out.as_str(), expected);
    Ok(())
}

/// A result's `"config"` has every key of the command line once, as
/// resolved: the keys the banner's display leaves out too (`ramdisk=`,
/// `bench=`, `format=`, `sample_ms=`), with the values given.
fn json_config_gives_every_key_as_resolved() -> TestResult {
    use alloc::string::String;
    use kreclaim::config::KEYS;
    use kreclaim::report::{JsonWriter, config_json};
    let c = Config::parse("ramdisk=8M sample_ms=250 bench=mm format=json mem=16M").unwrap();
    let mut out = String::new();
    let mut j = JsonWriter::new(&mut out);
    config_json(&c, &mut j);
    kassert!(j.finish().is_ok());
    for k in KEYS {
        let key = alloc::format!("\"{}\":\"", k.name);
        kassert_eq!(
            out.matches(key.as_str()).count(),
            1,
            "key {} in {out}",
            k.name
        );
    }
    for want in [
        r#""ramdisk":"8192K""#,
        r#""sample_ms":"250""#,
        r#""bench":"mm""#,
        r#""format":"json""#,
        r#""mem":"16384K""#,
        r#""policy":"today""#,
        r#""failslab":"off""#,
        r#""app_pages":"16""#,
        r#""disk_flush":"1000""#,
    ] {
        kassert!(out.contains(want), "{want} in {out}");
    }
    kassert!(out.starts_with('{') && out.ends_with('}'), "{out}");
    Ok(())
}
