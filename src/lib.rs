//! kreclaim: a Linux-style memory-reclaim framework and the bare-metal
//! x86_64 kernel that runs it under QEMU.
//!
//! The framework's core (platform traits, console, time, sync, task, mm,
//! generic `init`) is `no_std` and platform independent and builds alone
//! (`--no-default-features`). Features on by default add the rest: `fs` the
//! XFS-like filesystem, `demo` the command line, workload, report and
//! benchmarks, `qemu` the x86_64 platform booted by QEMU (`arch::x86_64`)
//! and the test harness.

#![no_std]

extern crate alloc;

#[cfg(feature = "demo")]
pub mod bench;
pub mod bootinfo;
#[cfg(feature = "demo")]
pub mod config;
pub mod console;
#[cfg(feature = "fs")]
pub mod fs;
#[cfg(target_os = "none")]
pub mod init;
pub mod json;
pub mod mm;
pub mod module;
pub mod platform;
pub mod prelude;
#[cfg(feature = "demo")]
pub mod report;
pub mod sync;
pub mod task;
pub mod time;
#[cfg(feature = "demo")]
pub mod workload;

#[cfg(all(feature = "qemu", target_os = "none", target_arch = "x86_64"))]
pub mod arch;
#[cfg(all(feature = "qemu", target_os = "none", target_arch = "x86_64"))]
pub mod harness;

/// Names the kernel's main function: `entry_point!(kmain)` where
/// `fn kmain(boot: &'static BootInfo) -> !`. `init::start_kernel` calls it
/// once the platform (console, paging, heap, timer) and the subsystems (page
/// allocator, kmalloc, tasks, kswapd) are up.
///
/// `entry_point!(kmain, cmdline = "mem=64M")` also builds in a command line
/// (Linux's CONFIG_CMDLINE): its tokens come before the boot loader's, so
/// the boot loader's win, and boot-time keys such as `mem=` see them.
#[macro_export]
macro_rules! entry_point {
    ($main:path) => {
        $crate::entry_point!($main, cmdline = "");
    };
    ($main:path, cmdline = $cmdline:expr) => {
        #[unsafe(no_mangle)]
        fn kreclaim_kernel_main(boot: &'static $crate::bootinfo::BootInfo) -> ! {
            let main: fn(&'static $crate::bootinfo::BootInfo) -> ! = $main;
            main(boot)
        }
        #[unsafe(no_mangle)]
        fn kreclaim_builtin_cmdline() -> &'static str {
            $cmdline
        }
    };
}
