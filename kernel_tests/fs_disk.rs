//! The filesystem's block device: RAM disk counters and injected errors.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Deref;
use kreclaim::fs::blockdev::{BlockDevice, ErrorInjection, IoError, RamDisk};
use kreclaim::harness::TestResult;
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    ramdisk_counters_count,
    injected_errors_fail_io_and_leave_the_device_unchanged,
);

const MIB: usize = 1 << 20;
const BLOCK_SIZE: usize = 4096;

/// A RAM disk over heap memory that it outlives (fields drop in order).
struct TestDisk {
    rd: RamDisk,
    _mem: Vec<u8>,
}

impl TestDisk {
    fn new(bytes: usize) -> Self {
        let mut mem = vec![0u8; bytes];
        // SAFETY: `mem`'s heap buffer never moves and is dropped after `rd`.
        let rd = unsafe { RamDisk::new(mem.as_mut_ptr(), mem.len(), BLOCK_SIZE) };
        Self { rd, _mem: mem }
    }
}

impl Deref for TestDisk {
    type Target = RamDisk;
    fn deref(&self) -> &RamDisk {
        &self.rd
    }
}

fn block() -> Vec<u8> {
    vec![0u8; BLOCK_SIZE]
}

/// Turns an `Err` into a test failure that shows it.
macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                return Err(kreclaim::harness::TestFailure::new(alloc::format!(
                    "{} failed: {:?}",
                    stringify!($e),
                    e
                )))
            }
        }
    };
}

fn ramdisk_counters_count() -> TestResult {
    let d = TestDisk::new(MIB);
    kassert_eq!(d.nr_blocks(), 256);
    let mut buf = block();
    for blk in 0..3 {
        ok!(d.write_block(blk, &buf));
    }
    for blk in 0..5 {
        ok!(d.read_block(blk, &mut buf));
    }
    kassert_eq!(
        d.read_block(256, &mut buf),
        Err(IoError::OutOfRange {
            blk: 256,
            nr_blocks: 256
        })
    );
    kassert!(matches!(
        d.write_block(0, &buf[..100]),
        Err(IoError::BadBufferSize { .. })
    ));
    ok!(d.flush());
    let s = d.stats();
    kassert_eq!((s.write_calls, s.write_blocks, s.write_errors), (4, 3, 1));
    kassert_eq!((s.read_calls, s.read_blocks, s.read_errors), (6, 5, 1));
    kassert_eq!(s.flushes, 1);
    Ok(())
}

fn injected_errors_fail_io_and_leave_the_device_unchanged() -> TestResult {
    let d = TestDisk::new(MIB);
    let old = vec![0x11u8; BLOCK_SIZE];
    let new = vec![0x22u8; BLOCK_SIZE];
    let mut buf = block();
    ok!(d.write_block(10, &old));

    d.inject_write_errors(ErrorInjection::FailNext(2));
    kassert_eq!(d.write_block(10, &new), Err(IoError::Injected));
    kassert_eq!(d.write_block(10, &new), Err(IoError::Injected));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == old, "failed writes changed the block");
    ok!(d.write_block(10, &new));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == new);

    d.inject_write_errors(ErrorInjection::FailBlock(10));
    for _ in 0..3 {
        kassert_eq!(d.write_block(10, &old), Err(IoError::Injected));
    }
    ok!(d.write_block(11, &old));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == new);
    d.clear_injection();
    ok!(d.write_block(10, &old));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == old);

    // FailAfter hits one write in the middle of a run.
    d.inject_write_errors(ErrorInjection::FailAfter { ok: 2, fail: 1 });
    ok!(d.write_block(1, &new));
    ok!(d.write_block(2, &new));
    kassert_eq!(d.write_block(3, &new), Err(IoError::Injected));
    ok!(d.write_block(4, &new));
    kassert_eq!(d.injection().1, ErrorInjection::Off);

    // Random failures, reproducible, and the block only ever holds a
    // completely written value.
    d.inject_write_errors(ErrorInjection::Random {
        percent: 30,
        seed: 42,
    });
    let (mut fails, mut last) = (0, 0u8);
    for i in 0..1000u32 {
        let v = vec![i as u8; BLOCK_SIZE];
        match d.write_block(20, &v) {
            Ok(()) => last = i as u8,
            Err(_) => fails += 1,
        }
        ok!(d.read_block(20, &mut buf));
        kassert!(buf.iter().all(|&x| x == last), "write {i}");
    }
    kassert!((200..400).contains(&fails), "{fails} of 1000 failed at 30%");
    d.clear_injection();

    // Reads fail without touching the caller's buffer.
    d.inject_read_errors(ErrorInjection::FailNext(1));
    buf.fill(0x77);
    kassert_eq!(d.read_block(10, &mut buf), Err(IoError::Injected));
    kassert!(buf.iter().all(|&x| x == 0x77));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == old);
    kassert!(d.stats().write_errors >= 6);
    Ok(())
}
