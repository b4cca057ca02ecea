//! kreclaim: a Linux-style memory-reclaim framework and the bare-metal
//! x86_64 kernel that runs it under QEMU.
//!
//! The framework (platform traits, console, time, mm, ...) is `no_std` and
//! platform independent; the `qemu` feature adds the x86_64 platform booted
//! by QEMU (`arch::x86_64`), the kernel command line and the test harness.

#![no_std]

extern crate alloc;

pub mod bench;
pub mod bootinfo;
pub mod config;
pub mod console;
pub mod fs;
pub mod mm;
pub mod module;
pub mod platform;
pub mod report;
pub mod sync;
pub mod task;
pub mod time;
pub mod workload;

#[cfg(all(feature = "qemu", target_os = "none", target_arch = "x86_64"))]
pub mod arch;
#[cfg(all(feature = "qemu", target_os = "none", target_arch = "x86_64"))]
pub mod harness;

/// Names the kernel's main function: `entry_point!(kmain)` where
/// `fn kmain(boot: &'static BootInfo) -> !`. The boot code calls it once the
/// platform (console, paging, heap, page allocator, timer) is up.
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
