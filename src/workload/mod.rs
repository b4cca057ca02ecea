//! The workload generator: many tasks creating, reading, writing, listing
//! and unlinking files on the XFS-like filesystem while memory is tight, so
//! that the inode and buffer caches are reclaimed constantly — then every
//! surviving file is verified against what was written, after an unmount
//! and a remount (so the contents come back from the disk).
//!
//! Everything the workers' filesystem operations need is allocated up front
//! (content buffers, the file table) so the run measures the filesystem and
//! reclaim, not the workload's bookkeeping. What the workers may allocate is
//! the application's own memory (`app_pages=`, 16 pages by default): before each operation a
//! worker faults in pages of user memory (GFP_HIGHUSER_MOVABLE, holding no
//! filesystem lock), writes them and frees them after the operation, as a
//! program's buffers come and go. Those allocations carry __GFP_FS, so
//! their direct reclaim runs the inode shrinker under every era, GFP_NOFS
//! eras included: in Linux the reclaim stalls of the era before 5.9 were
//! felt by such tasks (see docs/policies.md).

#![deny(missing_docs)]

use core::fmt;

mod run;
pub use run::{OpsPhase, RunCounters, RunResult, Sample, run};

/// A workload value that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSpec;

/// Operation mix in percent (read, write, readdir, unlink); the rest of
/// 100 are creates. Unlinked files are recreated by later creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Percent of operations that read a file back and check it.
    pub read: u8,
    /// Percent that write a file.
    pub write: u8,
    /// Percent that list a directory.
    pub readdir: u8,
    /// Percent that unlink a file.
    pub unlink: u8,
}

impl Mix {
    /// Read-heavy, like most file workloads: reads and directory listings
    /// are where allocations under ILOCK happen outside transactions, which
    /// is where the policies differ most.
    pub const DEFAULT: Mix = Mix {
        read: 60,
        write: 12,
        readdir: 20,
        unlink: 4,
    };

    /// Parses `read:45,write:25,readdir:15,unlink:8` (any subset; the
    /// rest up to 100 is create).
    pub fn parse(s: &str) -> Result<Mix, BadSpec> {
        let mut m = Mix {
            read: 0,
            write: 0,
            readdir: 0,
            unlink: 0,
        };
        for part in s.split(',') {
            let (k, v) = part.split_once(':').ok_or(BadSpec)?;
            let v: u8 = v.parse().map_err(|_| BadSpec)?;
            match k {
                "read" => m.read = v,
                "write" => m.write = v,
                "readdir" => m.readdir = v,
                "unlink" => m.unlink = v,
                _ => return Err(BadSpec),
            }
        }
        if m.read as u32 + m.write as u32 + m.readdir as u32 + m.unlink as u32 > 100 {
            return Err(BadSpec);
        }
        Ok(m)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read:{},write:{},readdir:{},unlink:{}",
            self.read, self.write, self.readdir, self.unlink
        )
    }
}

/// A workload: `files=`, `file_size=`, `fanout=`, `mix=`, `tasks=`, `ops=`,
/// `seed=`, `app_pages=` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Number of files (`files=`).
    pub files: u32,
    /// File sizes are uniform in `[min, max]` bytes.
    pub size_min: u32,
    /// See `size_min`.
    pub size_max: u32,
    /// Files per directory.
    pub fanout: u32,
    /// Operation mix (`mix=`).
    pub mix: Mix,
    /// Worker tasks (`tasks=`).
    pub tasks: u32,
    /// Operations in all (`ops=`), shared among the workers.
    pub ops: u64,
    /// Random seed (`seed=`): the same seed gives the same operations.
    pub seed: u64,
    /// Milliseconds between samples of the time series (`sample_ms=`).
    pub sample_ms: u32,
    /// Pages of application memory each worker faults in before each
    /// operation and frees after it (`app_pages=`; 16 by default, a
    /// program's 64 KiB of buffers; 0: none, the workload allocates
    /// nothing on its operation paths).
    pub app_pages: u32,
}

/// The largest `app_pages=`: 4 MiB of application memory per operation
/// and worker.
pub const APP_PAGES_MAX: u32 = 1024;

impl Default for Workload {
    fn default() -> Self {
        Self {
            files: 2400,
            size_min: 4 << 10,
            size_max: 28 << 10,
            fanout: 64,
            mix: Mix::DEFAULT,
            tasks: 4,
            ops: 12_000,
            seed: 42,
            sample_ms: 100,
            app_pages: 16,
        }
    }
}

/// The largest `file_size=`, in whole KiB as the help states it (4095K):
/// the workload reads a file into one kmalloc buffer of size + 1 bytes (the
/// extra byte catches a file that grew), and kmalloc's largest object is one
/// MAX_ORDER block of 4 MiB. The filesystem's own limit is higher.
pub const FILE_SIZE_MAX: u64 = {
    let kmalloc_max = crate::mm::zone::MAX_ORDER_NR_PAGES * crate::fs::format::BLOCK_SIZE as u64;
    let fs_max = crate::fs::format::MAX_FILE_SIZE;
    let m = if kmalloc_max - 1 < fs_max {
        kmalloc_max - 1
    } else {
        fs_max
    };
    m & !1023
};

/// xorshift64*: the workload's deterministic random numbers.
#[derive(Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// The contents of file `id` at generation `gen`: deterministic bytes.
pub fn fill_content(seed: u64, id: u32, gen_: u32, buf: &mut [u8]) {
    let mut r = Rng::new(seed ^ (id as u64) << 20 ^ (gen_ as u64) << 44);
    for chunk in buf.chunks_mut(8) {
        let v = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// FNV-1a, the checksum the verifier compares.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
