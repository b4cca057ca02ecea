//! Block devices: the trait the filesystem does IO through, and a RAM disk.
//!
//! The RAM disk lives in a caller-provided memory region (the kernel reserves
//! it at boot outside the page allocator), so IO never allocates. It counts
//! every call and every block moved, and can be told at run time to fail
//! reads or writes, which is how tests prove that IO errors come back as
//! values and leave the device untouched.
//!
//! Storage that takes time: a [`DiskModel`] (latency and bandwidth, the
//! demo's `disk_lat=` / `disk_bw=`) makes requests cost what they would on
//! a real device. The device is one in-order queue with a busy-until time:
//! a request's transfer starts when the queue is free (or now) and takes
//! `bytes / bandwidth`, so the bandwidth is modelled exactly whatever the
//! timer resolution; it completes `latency` after its transfer ends.
//!
//! - A read waits for its completion (the data is needed).
//! - A write is queued and the writer goes on, as a buffered write whose
//!   writeback runs later does; it waits only when the queue is full
//!   ([`QUEUE_DEPTH`] requests' worth of transfer ahead of it).
//! - `flush` (a cache flush, and what a synchronous write such as reclaim's
//!   old `SYNC_WAIT` cluster write waits for) waits until everything queued
//!   has completed: a synchronous writer waits behind the whole backlog.
//! - A log write (an XFS checkpoint: `REQ_PREFLUSH | REQ_FUA`) is queued
//!   behind a cache flush: the device first writes its volatile cache out
//!   (`disk_flush=`, [`DiskModel::flush_us`]; 1 ms by default), then
//!   transfers the checkpoint, so whoever waits for a log force waits for
//!   the flush too. It is the only request that carries one: on the
//!   workload's path nothing else flushes the cache (`flush` above is
//!   charged as the wait for the queue only; it runs on unmount, `sync` and
//!   old reclaim's synchronous writes, which Linux issues without a flush).
//!
//! A wait of at least one tick sleeps and is woken by the timer interrupt
//! on the first tick at or after the completion: with the 1 kHz tick it
//! ends up to 1 ms late. A shorter wait cannot be timed by the tick, so the
//! task polls instead, spinning on the clock as Linux's polled IO
//! (`blk_mq_poll`) does until the task must reschedule (here: the timer
//! preempts it at the end of its slice). Short requests thus cost their
//! modelled time rather than a whole tick, which keeps the workload's
//! thousands of small reads from each costing a millisecond; the price is
//! that a polling task keeps the CPU. The data itself is copied at once,
//! so the model changes timing only, never contents or errors. A
//! [`DiskModel::INSTANT`] device (the default of [`RamDisk::new`],
//! `disk_lat=0` on the command line) answers at once.

use crate::sync::SpinLock;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Why a device read or write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// Block number at or beyond the end of the device.
    OutOfRange {
        /// The block number asked for.
        blk: u64,
        /// The device's size in blocks.
        nr_blocks: u64,
    },
    /// The buffer is not exactly one block.
    BadBufferSize {
        /// The device's block size in bytes.
        expected: usize,
        /// The buffer's length in bytes.
        got: usize,
    },
    /// Failed on purpose by [`ErrorInjection`].
    Injected,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IoError::OutOfRange { blk, nr_blocks } => {
                write!(f, "block {blk} beyond end of device ({nr_blocks} blocks)")
            }
            IoError::BadBufferSize { expected, got } => {
                write!(f, "buffer of {got} bytes, block size is {expected}")
            }
            IoError::Injected => write!(f, "injected error"),
        }
    }
}

/// A device of fixed-size blocks. Reads and writes of one block are atomic
/// with respect to each other (no torn blocks).
pub trait BlockDevice: Send + Sync {
    /// Size of one block in bytes; every IO buffer must be exactly this long.
    fn block_size(&self) -> usize;
    /// Device size in blocks; valid block numbers are `0..nr_blocks()`.
    fn nr_blocks(&self) -> u64;
    /// Reads block `blk` into `buf` (one block long). On error `buf`'s
    /// contents are unspecified and the device is unchanged.
    fn read_block(&self, blk: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf` (one block long) to block `blk`. On error the block is
    /// unchanged.
    fn write_block(&self, blk: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes completed writes durable. A RAM disk has nothing to do.
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    /// [`write_block`](Self::write_block), returning when the write will
    /// have completed on the device (`time::now_ns` nanoseconds; 0 on a
    /// device that completes at once). The caller may go on before then
    /// and wait with [`wait_completion`](Self::wait_completion), as code
    /// that submits a buffer and later waits for its IO does.
    fn write_block_async(&self, blk: u64, buf: &[u8]) -> Result<u64, IoError> {
        self.write_block(blk, buf).map(|()| 0)
    }
    /// Waits until a write that [`write_block_async`](Self::write_block_async)
    /// said completes at `done_ns` has completed.
    fn wait_completion(&self, done_ns: u64) {
        let _ = done_ns;
    }
    /// Queues a log write of `bytes` (an XFS checkpoint, `REQ_PREFLUSH |
    /// REQ_FUA`: served after everything queued before it, and after the
    /// cache flush it carries) and returns
    /// when it will have completed (`time::now_ns`; 0 on a device that
    /// completes at once). It changes no block: the filesystem's log is
    /// modelled for its timing only (`fs::log`).
    fn submit_log_write(&self, bytes: u64) -> u64 {
        let _ = bytes;
        0
    }
}

/// How a RAM disk fails reads or writes on purpose. Set separately for reads
/// and writes with [`RamDisk::inject_read_errors`] and
/// [`RamDisk::inject_write_errors`]; a failed call changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorInjection {
    /// No injected errors.
    Off,
    /// Fail the next `n` calls, then succeed again.
    FailNext(u64),
    /// Let `ok` calls succeed, then fail the following `fail` calls (to hit
    /// one particular IO in the middle of an operation).
    FailAfter {
        /// Calls still to let through before failing.
        ok: u64,
        /// Calls to fail after those.
        fail: u64,
    },
    /// Fail every call on this block until cleared.
    FailBlock(u64),
    /// Fail each call with probability `percent`/100, from a seeded
    /// generator so runs repeat.
    Random {
        /// Failure probability in percent (0..=100).
        percent: u8,
        /// Generator state; advances with each call.
        seed: u64,
    },
}

/// IO counters. `*_calls` counts every call, failed or not; `*_blocks`
/// counts blocks actually transferred; `*_errors` counts failed calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// `read_block` calls.
    pub read_calls: u64,
    /// Blocks read successfully.
    pub read_blocks: u64,
    /// `read_block` calls that failed.
    pub read_errors: u64,
    /// `write_block` calls.
    pub write_calls: u64,
    /// Blocks written successfully.
    pub write_blocks: u64,
    /// `write_block` calls that failed.
    pub write_errors: u64,
    /// `flush` calls.
    pub flushes: u64,
    /// Log writes (`submit_log_write` calls).
    pub log_writes: u64,
    /// Time tasks waited for modelled IO completions, in nanoseconds.
    pub wait_ns: u64,
}

impl ErrorInjection {
    /// Decides whether this call on `blk` fails, advancing the state.
    fn should_fail(&mut self, blk: u64) -> bool {
        match self {
            ErrorInjection::Off => false,
            ErrorInjection::FailNext(n) => {
                let fail = *n > 0;
                *n = n.saturating_sub(1);
                if *n == 0 {
                    *self = ErrorInjection::Off;
                }
                fail
            }
            ErrorInjection::FailAfter { ok, fail } => {
                if *ok > 0 {
                    *ok -= 1;
                    false
                } else if *fail > 0 {
                    *fail -= 1;
                    if *fail == 0 {
                        *self = ErrorInjection::Off;
                    }
                    true
                } else {
                    *self = ErrorInjection::Off;
                    false
                }
            }
            ErrorInjection::FailBlock(b) => *b == blk,
            ErrorInjection::Random { percent, seed } => {
                // xorshift64*: cheap, deterministic, good enough for tests.
                let mut x = if *seed == 0 {
                    0x9e37_79b9_7f4a_7c15
                } else {
                    *seed
                };
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                *seed = x;
                let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
                (r % 100) < u64::from(*percent)
            }
        }
    }
}

/// Latency and bandwidth of a modelled device (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskModel {
    /// Time from the end of a request's transfer to its completion, in
    /// microseconds (0: none).
    pub lat_us: u64,
    /// Transfer rate in MB/s (10^6 bytes per second; 0: unlimited).
    pub bw_mbps: u64,
    /// Time the device takes to write its volatile cache out before a log
    /// write (`REQ_PREFLUSH`), in microseconds (0: a drive without a
    /// volatile cache, or with power-loss protection, whose flush is free).
    pub flush_us: u64,
}

impl DiskModel {
    /// A RAM disk: every request completes at once.
    pub const INSTANT: DiskModel = DiskModel {
        lat_us: 0,
        bw_mbps: 0,
        flush_us: 0,
    };
    /// About a consumer SATA SSD: 100 µs per request, 500 MB/s (a 4 KiB
    /// block transfers in 8.2 µs), and 1 ms to write its volatile cache
    /// out on a cache flush (what a flush costs such a drive when little
    /// is dirty in its cache; more after heavy writing).
    pub const SATA_SSD: DiskModel = DiskModel {
        lat_us: 100,
        bw_mbps: 500,
        flush_us: 1000,
    };

    /// Whether requests take no time at all: no latency means no model
    /// (the bandwidth is then ignored), today's RAM disk.
    pub fn is_instant(&self) -> bool {
        self.lat_us == 0
    }

    /// Transfer time of `bytes`, in nanoseconds.
    pub fn transfer_ns(&self, bytes: u64) -> u64 {
        // MB/s = bytes per µs: bytes * 1000 / MB/s nanoseconds (0 MB/s:
        // unlimited).
        (bytes * 1000).checked_div(self.bw_mbps).unwrap_or(0)
    }
}

impl Default for DiskModel {
    fn default() -> Self {
        DiskModel::INSTANT
    }
}

impl fmt::Display for DiskModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk_lat={} disk_bw={} disk_flush={}",
            self.lat_us, self.bw_mbps, self.flush_us
        )
    }
}

/// The tick period the model assumes (the x86_64 platform's PIT ticks at
/// 1 kHz): waits at least this long sleep, shorter ones are polled.
pub const TICK_NS: u64 = 1_000_000;

/// Requests a modelled device queues before a writer has to wait (Linux's
/// default `nr_requests` is 64 per hardware queue).
pub const QUEUE_DEPTH: u64 = 64;

/// The queue of a modelled device: when it is next free.
struct DiskQueue {
    model: DiskModel,
    busy_until_ns: u64,
}

struct Injection {
    read: ErrorInjection,
    write: ErrorInjection,
}

/// A block device over a memory region.
pub struct RamDisk {
    base: *mut u8,
    block_size: usize,
    nr_blocks: u64,
    /// Held across every block copy, so a read never sees half a write; also
    /// guards the injection state.
    state: SpinLock<Injection>,
    read_calls: AtomicU64,
    read_blocks: AtomicU64,
    read_errors: AtomicU64,
    write_calls: AtomicU64,
    write_blocks: AtomicU64,
    write_errors: AtomicU64,
    flushes: AtomicU64,
    log_writes: AtomicU64,
    queue: SpinLock<DiskQueue>,
    wait_ns: AtomicU64,
}

// SAFETY: the region is owned by the RamDisk (contract of `new`) and every
// access to it happens under `state`'s lock.
unsafe impl Send for RamDisk {}
// SAFETY: the RamDisk owns its region (contract of `new`) and every access to it happens under
// `state`'s lock, so `&RamDisk` may be shared between tasks.
unsafe impl Sync for RamDisk {}

impl RamDisk {
    /// A RAM disk of `len / block_size` blocks at `base` (a partial last
    /// block is unused). The contents are whatever the memory holds.
    ///
    /// # Safety
    /// `base..base+len` must be valid for reads and writes, used by nothing
    /// else, and outlive the RAM disk.
    ///
    /// # Panics
    /// If `block_size` is 0 (a programming error, not a disk condition).
    pub unsafe fn new(base: *mut u8, len: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "RamDisk::new: block size 0");
        Self {
            base,
            block_size,
            nr_blocks: (len / block_size) as u64,
            state: SpinLock::new(
                Injection {
                    read: ErrorInjection::Off,
                    write: ErrorInjection::Off,
                },
                crate::lock_class!("ramdisk"),
            ),
            read_calls: AtomicU64::new(0),
            read_blocks: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            write_calls: AtomicU64::new(0),
            write_blocks: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            log_writes: AtomicU64::new(0),
            queue: SpinLock::new(
                DiskQueue {
                    model: DiskModel::INSTANT,
                    busy_until_ns: 0,
                },
                crate::lock_class!("ramdisk_queue"),
            ),
            wait_ns: AtomicU64::new(0),
        }
    }

    /// Sets the latency and bandwidth model from now on.
    pub fn set_model(&self, model: DiskModel) {
        let mut q = self.queue.lock();
        q.model = model;
        q.busy_until_ns = 0;
    }

    /// The current latency and bandwidth model.
    pub fn model(&self) -> DiskModel {
        self.queue.lock().model
    }

    /// Queues a request of `bytes` on the modelled device and returns when
    /// the submitter may go on (see the module docs): a read when it has
    /// completed, a write once the queue holds at most [`QUEUE_DEPTH`]
    /// requests' worth of transfer. Instant devices return at once.
    /// Returns when the request completes (0 on an instant device).
    fn submit(&self, bytes: u64, read: bool) -> u64 {
        self.submit_after_flush(bytes, read, false)
    }

    /// [`RamDisk::submit`], preceded on the device by a cache flush if
    /// `preflush` (a log write's `REQ_PREFLUSH`): the device writes its
    /// cache out ([`DiskModel::flush_us`]) before it transfers the request.
    fn submit_after_flush(&self, bytes: u64, read: bool, preflush: bool) -> u64 {
        let (until, done) = {
            let mut q = self.queue.lock();
            if q.model.is_instant() {
                return 0;
            }
            let now = crate::time::now_ns();
            let xfer = q.model.transfer_ns(bytes);
            let flush = if preflush { q.model.flush_us * 1000 } else { 0 };
            let start = q.busy_until_ns.max(now);
            let end = start + flush + xfer;
            q.busy_until_ns = end;
            let done = end + q.model.lat_us * 1000;
            if read {
                (done, done)
            } else {
                // The writer waits for room in the queue, not for the
                // flush its own request carries.
                ((start + xfer).saturating_sub(QUEUE_DEPTH * xfer), done)
            }
        };
        self.wait_until(until);
        done
    }

    /// Waits until every request queued so far has completed (a cache
    /// flush; also what a synchronous write waits for, since the queue is
    /// served in order).
    fn drain(&self) {
        let until = {
            let q = self.queue.lock();
            if q.model.is_instant() {
                return;
            }
            q.busy_until_ns + q.model.lat_us * 1000
        };
        self.wait_until(until);
    }

    /// Waits for the clock to reach `until`: asleep and woken by the timer
    /// interrupt if at least a tick away, else polled.
    fn wait_until(&self, until: u64) {
        let t0 = crate::time::now_ns();
        if t0 >= until {
            return;
        }
        // Direct reclaim's stall part "log/device": every wait for the
        // device inside a memstall (log forces, cluster writes in flight,
        // SYNC_WAIT writeback and flushes, buffer reads, a full queue).
        let _stall = crate::mm::memstall::StallTimer::start(crate::mm::memstall::StallPart::Io);
        loop {
            let now = crate::time::now_ns();
            if now >= until {
                break;
            }
            let left = until - now;
            if left >= TICK_NS && crate::task::can_block_current() {
                // Woken by the timer interrupt on the first tick at or
                // after the completion.
                crate::task::sleep(core::time::Duration::from_nanos(left));
            } else {
                // Polled: shorter than a tick.
                core::hint::spin_loop();
            }
        }
        self.wait_ns
            .fetch_add(crate::time::now_ns() - t0, Ordering::Relaxed);
    }

    /// A RAM disk over memory that lives forever (e.g. a leaked `Vec`).
    pub fn from_static(mem: &'static mut [u8], block_size: usize) -> Self {
        // SAFETY: a `'static mut` borrow is exclusive and never ends.
        unsafe { Self::new(mem.as_mut_ptr(), mem.len(), block_size) }
    }

    /// Sets how reads fail from now on (replacing any earlier setting).
    pub fn inject_read_errors(&self, how: ErrorInjection) {
        self.state.lock().read = how;
    }

    /// Sets how writes fail from now on (replacing any earlier setting).
    pub fn inject_write_errors(&self, how: ErrorInjection) {
        self.state.lock().write = how;
    }

    /// Stops all injected errors.
    pub fn clear_injection(&self) {
        let mut s = self.state.lock();
        s.read = ErrorInjection::Off;
        s.write = ErrorInjection::Off;
    }

    /// The current injection settings (read, write), with remaining counts.
    pub fn injection(&self) -> (ErrorInjection, ErrorInjection) {
        let s = self.state.lock();
        (s.read, s.write)
    }

    /// A snapshot of the IO counters since creation or the last
    /// [`reset_stats`](Self::reset_stats).
    pub fn stats(&self) -> IoStats {
        IoStats {
            read_calls: self.read_calls.load(Ordering::Relaxed),
            read_blocks: self.read_blocks.load(Ordering::Relaxed),
            read_errors: self.read_errors.load(Ordering::Relaxed),
            write_calls: self.write_calls.load(Ordering::Relaxed),
            write_blocks: self.write_blocks.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            log_writes: self.log_writes.load(Ordering::Relaxed),
            wait_ns: self.wait_ns.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the IO counters (to measure the IO of one operation).
    pub fn reset_stats(&self) {
        for c in [
            &self.read_calls,
            &self.read_blocks,
            &self.read_errors,
            &self.write_calls,
            &self.write_blocks,
            &self.write_errors,
            &self.flushes,
            &self.log_writes,
            &self.wait_ns,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn check(&self, blk: u64, len: usize) -> Result<usize, IoError> {
        if blk >= self.nr_blocks {
            return Err(IoError::OutOfRange {
                blk,
                nr_blocks: self.nr_blocks,
            });
        }
        if len != self.block_size {
            return Err(IoError::BadBufferSize {
                expected: self.block_size,
                got: len,
            });
        }
        Ok(blk as usize * self.block_size)
    }
}

impl BlockDevice for RamDisk {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    fn read_block(&self, blk: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.read_calls.fetch_add(1, Ordering::Relaxed);
        let res = self.check(blk, buf.len()).and_then(|off| {
            let mut s = self.state.lock();
            if s.read.should_fail(blk) {
                return Err(IoError::Injected);
            }
            // SAFETY: `check` keeps `off..off+block_size` inside the region
            // (contract of `new`), and the lock excludes concurrent writers.
            unsafe {
                core::ptr::copy_nonoverlapping(self.base.add(off), buf.as_mut_ptr(), buf.len())
            };
            Ok(())
        });
        match res {
            Ok(()) => self.read_blocks.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.read_errors.fetch_add(1, Ordering::Relaxed),
        };
        if res.is_ok() {
            self.submit(buf.len() as u64, true);
        }
        res
    }

    fn write_block(&self, blk: u64, buf: &[u8]) -> Result<(), IoError> {
        self.write_block_async(blk, buf).map(|_| ())
    }

    fn wait_completion(&self, done_ns: u64) {
        self.wait_until(done_ns);
    }

    fn write_block_async(&self, blk: u64, buf: &[u8]) -> Result<u64, IoError> {
        self.write_calls.fetch_add(1, Ordering::Relaxed);
        let res = self.check(blk, buf.len()).and_then(|off| {
            let mut s = self.state.lock();
            if s.write.should_fail(blk) {
                return Err(IoError::Injected);
            }
            // SAFETY: `check` keeps `off..off+len` inside the region (contract
            // of `new`), `buf` cannot overlap it (the region is the disk's
            // alone), and the lock excludes concurrent access.
            unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), self.base.add(off), buf.len()) };
            Ok(())
        });
        match res {
            Ok(()) => self.write_blocks.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.write_errors.fetch_add(1, Ordering::Relaxed),
        };
        res.map(|()| self.submit(buf.len() as u64, false))
    }

    fn flush(&self) -> Result<(), IoError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.drain();
        Ok(())
    }

    fn submit_log_write(&self, bytes: u64) -> u64 {
        self.log_writes.fetch_add(1, Ordering::Relaxed);
        self.submit_after_flush(bytes, false, true)
    }
}
