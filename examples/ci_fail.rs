//! Deliberately failing test kernel: .ci/run checks the runner exits non-zero.

#![no_std]
#![no_main]

extern crate alloc;

use kreclaim::harness::TestResult;
use kreclaim::kassert_eq;

kreclaim::kernel_tests!(passes, fails_on_purpose);

fn passes() -> TestResult {
    Ok(())
}

fn fails_on_purpose() -> TestResult {
    kassert_eq!(1 + 1, 3, "deliberate failure");
    Ok(())
}
