//! The kreclaim demo kernel: what `cargo run` boots.

#![no_std]
#![no_main]

extern crate alloc;

use kreclaim::bootinfo::{BootInfo, RegionKind};
use kreclaim::config::{Bench, Config};
use kreclaim::println;

kreclaim::entry_point!(kmain);

const MIB: u64 = 1 << 20;

fn kmain(boot: &'static BootInfo) -> ! {
    let config = Config::from_cmdline_or_exit(boot.cmdline());
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
        }
        kreclaim::platform::exit(true);
    }
    println!(
        "kreclaim {} — a kernel about memory reclaim",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "memory: {} MiB RAM, {} MiB usable ({} usable regions)",
        boot.ram_bytes() / MIB,
        boot.usable_bytes() / MIB,
        boot.usable.regions().len()
    );
    println!("firmware memory map:");
    for r in boot.firmware_map.regions() {
        println!(
            "  [{:#012x} - {:#012x}) {:>9} KiB  {}",
            r.start,
            r.end,
            r.len() / 1024,
            r.kind
        );
    }
    println!("usable RAM:");
    for r in boot
        .usable
        .regions()
        .iter()
        .filter(|r| r.kind == RegionKind::Ram)
    {
        println!(
            "  [{:#012x} - {:#012x}) {:>9} KiB",
            r.start,
            r.end,
            r.len() / 1024
        );
    }
    println!("page allocator:");
    kreclaim::mm::page_alloc::show_mem();
    println!("command line: '{}'", boot.cmdline());
    println!("configuration: {config}");
    kreclaim::platform::exit(true)
}
