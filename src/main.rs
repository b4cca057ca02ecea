//! The kreclaim demo kernel: what `cargo run` boots. Its main job runs the
//! filesystem workload under a reclaim policy (or every policy) on a RAM
//! disk, with memory capped so that reclaim runs constantly, and prints the
//! report; `bench=` runs a benchmark instead.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use kreclaim::bench::Format;
use kreclaim::bootinfo::{BootInfo, RegionKind};
use kreclaim::config::{Bench, Config, PolicyChoice};
use kreclaim::fs::policy::Policy;
use kreclaim::println;
use kreclaim::workload::{self, RunResult};

// The page allocator gets 16 MiB and the RAM disk 64 MiB: the default
// workload's files (about 2,400 of 4-28 KiB, ~38 MiB) are more than twice
// the memory the caches may use. Arguments after `--` override these.
kreclaim::entry_point!(kmain, cmdline = "mem=16M ramdisk=64M");

const MIB: u64 = 1 << 20;

fn kmain(boot: &'static BootInfo) -> ! {
    let config = Config::from_cmdline_or_exit(boot.cmdline());
    // Recorded for the JSON results before fault injection is armed.
    kreclaim::report::set_config(config.clone());
    // Resolved before fault injection is armed (this allocates).
    let policies = config.policies();
    config.apply();
    if let Some(bench) = config.bench {
        match bench {
            Bench::Locks => kreclaim::bench::locks(config.format),
            Bench::Mm => {
                if let Err(e) = kreclaim::bench::mm(config.format) {
                    println!("bench=mm: no 4 MiB block for the peer heap: {e}");
                    kreclaim::platform::exit(false);
                }
            }
            Bench::Smp => {
                if let Err(e) = kreclaim::bench::smp(config.format) {
                    println!("bench=smp: no 4 MiB block for the peer heap: {e}");
                    kreclaim::platform::exit(false);
                }
            }
        }
        kreclaim::platform::exit(true);
    }
    let text = config.format == Format::Text;
    if text {
        banner(boot, &config);
    }
    let Some(dev) = kreclaim::arch::x86_64::boot_ramdisk() else {
        println!("kreclaim: no RAM disk: boot with ramdisk=<size> (e.g. ramdisk=64M)");
        kreclaim::platform::exit(false);
    };
    dev.set_model(config.disk);
    if let Err(why) = workload_fits(&config) {
        println!("kreclaim: {why}");
        kreclaim::platform::exit(false);
    }
    let all = config.policy == PolicyChoice::All;
    // Fault injection may already be armed (`failslab=`): every allocation
    // from here on is fallible.
    let mut results: Vec<RunResult> = Vec::new();
    if results.try_reserve_exact(policies.len()).is_err() {
        println!("kreclaim: out of memory for the results");
        kreclaim::platform::exit(false);
    }
    for &p in &policies {
        // Each policy starts from a fresh lockdep graph so that its reports
        // are its own.
        kreclaim::sync::lockdep::reset_graph();
        if text {
            println!("\n--- policy {p}: {} ---", describe(p));
            println!("knobs: {}", p.knobs());
        }
        match workload::run(dev, p, config.workload, text && !all) {
            Ok(r) => {
                if text && all {
                    println!(
                        "policy {p}: {} ops, integrity {}, {} lockdep reports, {} deadlocks",
                        r.ops,
                        if r.integrity_ok { "ok" } else { "FAILED" },
                        r.lockdep_reports,
                        r.deadlocks
                    );
                }
                results.push(r);
            }
            Err(e) => {
                println!("kreclaim: workload under policy {p} failed: {e}");
                kreclaim::platform::exit(false);
            }
        }
        if results.last().is_some_and(|r| r.deadlocks > 0) {
            // Deadlocked tasks still hold the filesystem: nothing can follow.
            break;
        }
    }
    if all {
        kreclaim::report::comparison(&results, config.format);
    } else if text {
        kreclaim::report::single(&results[0]);
    } else {
        kreclaim::report::json(&results[0]);
    }
    // `broken` is expected to deadlock; every other policy must keep data
    // intact and run every operation asked for.
    let mut ok = true;
    for r in &results {
        if r.policy.is_broken() && r.deadlocks > 0 {
            continue;
        }
        if r.is_partial() {
            partial_run(r, config.workload.tasks);
        }
        ok &= r.integrity_ok && !r.is_partial();
    }
    kreclaim::platform::exit(ok)
}

/// Refuses up front a workload whose worker tasks cannot all run at once:
/// each needs a stack and a file buffer (both contiguous blocks), and
/// together they must fit in the memory the page allocator manages. Runs
/// that pass may still be cut short by fragmentation (see [`partial_run`]).
fn workload_fits(config: &Config) -> Result<(), alloc::string::String> {
    let w = &config.workload;
    let block = |bytes: u64| bytes.div_ceil(4096).next_power_of_two() * 4096;
    let per_task = block(kreclaim::task::STACK_SIZE as u64) + block(w.size_max as u64 + 1);
    let need = per_task * w.tasks as u64;
    let managed = kreclaim::mm::page_alloc::managed_pages() * 4096;
    if need <= managed {
        return Ok(());
    }
    Err(alloc::format!(
        "tasks={} with file_size up to {} KiB need {} KiB for worker stacks and file buffers, \
         more than the {} KiB the page allocator manages: lower tasks= or file_size=, or raise mem=",
        w.tasks,
        w.size_max >> 10,
        need >> 10,
        managed >> 10
    ))
}

/// Says what a partial run did not do (the run then exits with failure).
fn partial_run(r: &RunResult, tasks: u32) {
    if r.workers_oom_killed > 0 {
        println!(
            "kreclaim: partial run under policy {}: {} of {} operations ran; the OOM killer \
             killed {} of {tasks} worker tasks (oom=fail makes such allocations fail instead)",
            r.policy, r.ops, r.ops_requested, r.workers_oom_killed
        );
    } else if r.workers_failed > 0 {
        println!(
            "kreclaim: partial run under policy {}: {} of {} operations ran; {} of {tasks} worker \
             tasks could not start (no memory for a stack or a file buffer)",
            r.policy, r.ops, r.ops_requested, r.workers_failed
        );
    } else {
        println!(
            "kreclaim: partial run under policy {}: {} of {} operations ran",
            r.policy, r.ops, r.ops_requested
        );
    }
}

fn describe(p: Policy) -> &'static str {
    match p.name {
        "nofs" => "GFP_NOFS everywhere, blocking ILOCK and sync writeback in reclaim (legacy XFS)",
        "kernel" => "GFP_KERNEL under ILOCK, reclaim as nofs (the seed's false positive)",
        "nolockdep" => "as kernel, allocations under ILOCK carry __GFP_NOLOCKDEP",
        "trylock" => {
            "scoped NOFS transactions, trylocks only in reclaim, no writeback (the seed's plan)"
        }
        "today" => {
            "trylock + final blocking ILOCK + GFP_KERNEL|__GFP_NOLOCKDEP under ILOCK (XFS since 5.9)"
        }
        _ => "reclaim blocks on referenced inodes: a real deadlock (deliberate bug)",
    }
}

fn banner(boot: &BootInfo, config: &Config) {
    println!(
        "kreclaim {} — a kernel about memory reclaim",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "memory: {} MiB RAM, {} MiB usable ({} regions), page allocator {} MiB, RAM disk {} MiB",
        boot.ram_bytes() / MIB,
        boot.usable_bytes() / MIB,
        boot.usable
            .regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Ram)
            .count(),
        kreclaim::mm::page_alloc::managed_pages() * 4096 / MIB,
        boot.ramdisk.map(|r| r.len() / MIB).unwrap_or(0)
    );
    for r in boot.firmware_map.regions() {
        println!(
            "  [{:#012x} - {:#012x}) {:>9} KiB  {}",
            r.start,
            r.end,
            r.len() / 1024,
            r.kind
        );
    }
    println!(
        "cpus: {} online (each runs tasks from its own run queue)",
        kreclaim::platform::nr_cpus()
    );
    println!("command line: '{}'", boot.cmdline());
    println!("configuration: {config}");
}
