//! Deliberately hanging test kernel: .ci/run checks the runner's timeout.

#![no_std]
#![no_main]

extern crate alloc;

use kreclaim::harness::TestResult;

kreclaim::kernel_tests!(hangs_on_purpose);

fn hangs_on_purpose() -> TestResult {
    loop {
        x86_64::instructions::hlt();
    }
}
