//! Deliberately panicking test kernel: .ci/run checks the runner exits non-zero.

#![no_std]
#![no_main]

extern crate alloc;

use kreclaim::harness::TestResult;

kreclaim::kernel_tests!(panics_on_purpose);

fn panics_on_purpose() -> TestResult {
    let v: [u32; 0] = [];
    let i = core::hint::black_box(3);
    panic!("deliberate panic, value {}", v.get(i).copied().unwrap_or(7))
}
