//! The kernel command line: `key=value` tokens parsed into a typed [`Config`].
//!
//! Every key is described once in [`KEYS`]; an unknown key or a bad value is
//! an error naming the token and listing the valid keys.

#![deny(missing_docs)]

use crate::fs::policy::{KNOBS, Policy};
use crate::mm::fault_inject::{FAIL_PAGE_ALLOC, FAILSLAB, FaultSpec};
use crate::mm::slab::{SlabFlags, slab_debug_parse};
use crate::sync::lockdep::LockdepMode;
use crate::task::SchedMode;
use crate::workload::{FILE_SIZE_MAX, Mix, Workload};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

/// Output format of benchmarks and reports (`format=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `loglevel=off|error|warn|info|debug|trace` (default `info`).
    pub loglevel: log::LevelFilter,
    /// `sched=preempt|coop` (default `preempt`).
    pub sched: SchedMode,
    /// `lockdep=on|off|fatal` (default `on`).
    pub lockdep: LockdepMode,
    /// `bench=locks|mm|smp`: run a benchmark instead of the workload.
    pub bench: Option<Bench>,
    /// `format=text|json` for reports and benchmarks.
    pub format: Format,
    /// `mem=<size>`: RAM handed to the page allocator, in bytes (default:
    /// all). Read at boot, before the main function.
    pub mem: Option<u64>,
    /// `min_free_kbytes=<KiB>` (default: Linux's int_sqrt(lowmem_kB * 16)).
    /// Read at boot.
    pub min_free_kbytes: Option<u64>,
    /// `fail_page_alloc=<interval>,<probability>,<space>,<times>`.
    pub fail_page_alloc: Option<FaultSpec>,
    /// `failslab=<interval>,<probability>,<space>,<times>`.
    pub failslab: Option<FaultSpec>,
    /// `fail_page_alloc_min_order=<order>` (default 0).
    pub fail_page_alloc_min_order: Option<u32>,
    /// `oom=kill|fail`: run the OOM killer where Linux would (default), or
    /// fail the allocation instead.
    pub oom: crate::mm::oom_kill::OomPolicy,
    /// `ramdisk=<size>`: memory reserved at boot for the RAM disk (default
    /// none; the demo kernel builds in 64M).
    pub ramdisk: Option<u64>,
    /// `slab_debug=[FZP-][,cache]`: debug flags for caches (read at boot).
    pub slab_debug: Option<(SlabFlags, Option<String>)>,
    /// `policy=nofs|kernel|nolockdep|trylock|today|broken|all` (default
    /// today).
    pub policy: PolicyChoice,
    /// Knob overrides (`reclaim_final_lock=off`, see
    /// [`crate::fs::policy::KNOBS`]), in command-line order, applied on top
    /// of the chosen era(s) by [`Config::policies`].
    pub knobs: Vec<(&'static str, &'static str)>,
    /// `disk_lat=<µs>`, `disk_bw=<MB/s>` and `disk_flush=<µs>`: the RAM
    /// disk's latency, bandwidth and cache-flush model (default a SATA SSD;
    /// `disk_lat=0`: instant).
    /// The demo kernel applies it; test kernels set their own.
    pub disk: crate::fs::DiskModel,
    /// `files=`, `file_size=`, `fanout=`, `mix=`, `tasks=`, `ops=`, `seed=`,
    /// `sample_ms=`, `app_pages=`.
    pub workload: Workload,
}

/// Which reclaim policies the main job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChoice {
    /// One policy (`policy=<name>`).
    One(Policy),
    /// Every policy on the same workload and seed, then a comparison table.
    All,
}

/// Which benchmark `bench=` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// Lock acquire/release costs (`bench=locks`).
    Locks,
    /// Allocator costs (`bench=mm`).
    Mm,
    /// Allocator throughput on 1, 2 and 4 CPUs at once (`bench=smp`).
    Smp,
}

pub use crate::mm::page_alloc::MEM_MIN;

/// The smallest `min_free_kbytes=` accepted: Linux's floor for its default.
/// With less, GFP_ATOMIC and reclaim's own allocations have no reserve and
/// the workload's larger allocations fail (a run does part of its work).
pub const MIN_FREE_KBYTES_MIN: u64 = 128;

/// [`memparse`] could not read a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSize;

impl fmt::Display for BadSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a size: expected a number with an optional K|M|G|T|P|E suffix")
    }
}

/// Linux's `memparse`: a number (decimal, `0x` hex or leading-`0` octal, as
/// `simple_strtoull` with base 0) with an optional K, M, G, T, P or E
/// suffix (either case) multiplying by 1024 each. Stricter than Linux: the
/// whole string must be consumed, and overflow is an error.
pub fn memparse(s: &str) -> Result<u64, BadSize> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return Err(BadSize);
    }
    let n = u64::from_str_radix(&digits[..end], radix).map_err(|_| BadSize)?;
    let shift = match &digits[end..] {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        "P" | "p" => 50,
        "E" | "e" => 60,
        _ => return Err(BadSize),
    };
    n.checked_mul(1 << shift).ok_or(BadSize)
}

/// Parses `file_size=` values: `16K` or a range `4K-28K` (memparse units),
/// each at most [`FILE_SIZE_MAX`] (the workload's limit: the command line
/// builds the workload's parameters, the workload knows nothing of it).
/// `v` as a number within `range` (a key's value; `Err` is reported by the
/// caller with the key's valid values).
fn parse_in<T: core::str::FromStr + PartialOrd>(
    v: &str,
    range: core::ops::RangeInclusive<T>,
) -> Result<T, ()> {
    v.parse().ok().filter(|n| range.contains(n)).ok_or(())
}

fn parse_size_range(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('-').unwrap_or((v, v));
    let (a, b) = (memparse(a).ok()?, memparse(b).ok()?);
    if a == 0 || a > b || b > FILE_SIZE_MAX {
        return None;
    }
    Some((a as u32, b as u32))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            loglevel: log::LevelFilter::Info,
            sched: SchedMode::Preemptive,
            lockdep: LockdepMode::On,
            bench: None,
            format: Format::Text,
            mem: None,
            min_free_kbytes: None,
            fail_page_alloc: None,
            failslab: None,
            fail_page_alloc_min_order: None,
            oom: crate::mm::oom_kill::OomPolicy::Kill,
            ramdisk: None,
            slab_debug: None,
            policy: PolicyChoice::One(Policy::DEFAULT),
            knobs: Vec::new(),
            disk: crate::fs::DiskModel::SATA_SSD,
            workload: Workload::default(),
        }
    }
}

/// One command-line key: its name, the values it takes, and its parser.
pub struct Key {
    /// The key, as written before `=`.
    pub name: &'static str,
    /// The values it takes, for help and errors.
    pub values: &'static str,
    /// One line of help.
    pub help: &'static str,
    set: fn(&mut Config, &str) -> Result<(), ()>,
}

/// Every key the kernel understands.
pub static KEYS: &[Key] = &[
    Key {
        name: "loglevel",
        values: "off|error|warn|info|debug|trace",
        help: "most verbose log level printed",
        set: |c, v| {
            c.loglevel = match v {
                "off" => log::LevelFilter::Off,
                "error" => log::LevelFilter::Error,
                "warn" => log::LevelFilter::Warn,
                "info" => log::LevelFilter::Info,
                "debug" => log::LevelFilter::Debug,
                "trace" => log::LevelFilter::Trace,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "sched",
        values: "preempt|coop",
        help: "preemptive round-robin on the timer tick, or cooperative (deterministic replays)",
        set: |c, v| {
            c.sched = match v {
                "preempt" => SchedMode::Preemptive,
                "coop" => SchedMode::Cooperative,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "lockdep",
        values: "on|off|fatal",
        help: "lock validator: report, disabled, or report and fail the kernel",
        set: |c, v| {
            c.lockdep = match v {
                "on" => LockdepMode::On,
                "off" => LockdepMode::Off,
                "fatal" => LockdepMode::Fatal,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "bench",
        values: "locks|mm|smp",
        help: "run a benchmark and exit",
        set: |c, v| {
            c.bench = Some(match v {
                "locks" => Bench::Locks,
                "mm" => Bench::Mm,
                "smp" => Bench::Smp,
                _ => return Err(()),
            });
            Ok(())
        },
    },
    Key {
        name: "mem",
        values: "a size of at least 4M: bytes with an optional K|M|G|T|P|E suffix",
        help: "RAM given to the page allocator, taken from the lowest usable regions",
        set: |c, v| {
            let bytes = memparse(v).map_err(|_| ())?;
            if bytes < MEM_MIN {
                return Err(());
            }
            c.mem = Some(bytes);
            Ok(())
        },
    },
    Key {
        name: "format",
        values: "text|json",
        help: "output format of reports and benchmarks",
        set: |c, v| {
            c.format = match v {
                "text" => Format::Text,
                "json" => Format::Json,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "min_free_kbytes",
        values: "a number of KiB, 128..=2147483647 (below 128 atomic allocations and reclaim \
                 have no reserve; at boot the high watermark must also stay below managed memory)",
        help: "the MIN watermark in KiB; LOW and HIGH follow from it",
        set: |c, v| {
            let kb: u64 = v.parse().map_err(|_| ())?;
            if !(MIN_FREE_KBYTES_MIN..=i32::MAX as u64).contains(&kb) {
                return Err(());
            }
            c.min_free_kbytes = Some(kb);
            Ok(())
        },
    },
    Key {
        name: "fail_page_alloc",
        values: "<interval>,<probability %>,<space in pages>,<times>",
        help: "fault injection: make page allocations fail on purpose",
        set: |c, v| {
            c.fail_page_alloc = Some(FaultSpec::parse(v).ok_or(())?);
            Ok(())
        },
    },
    Key {
        name: "ramdisk",
        values: "a size (memparse, e.g. 64M), at least 1M",
        help: "memory reserved at boot for the RAM disk the filesystem lives on",
        set: |c, v| {
            let bytes = memparse(v).map_err(|_| ())?;
            if bytes < (1 << 20) {
                return Err(());
            }
            c.ramdisk = Some(bytes);
            Ok(())
        },
    },
    Key {
        name: "policy",
        values: "nofs|kernel|nolockdep|trylock|today|broken|all",
        help: "reclaim policy (XFS era) of the filesystem (all: run each and compare)",
        set: |c, v| {
            c.policy = match v {
                "all" => PolicyChoice::All,
                v => PolicyChoice::One(Policy::by_name(v).ok_or(())?),
            };
            Ok(())
        },
    },
    Key {
        name: "disk_lat",
        values: "microseconds per request, 0..=1000000 (0: an instant RAM disk, no model)",
        help: "latency of the RAM disk's modelled device (default 100, a SATA SSD)",
        set: |c, v| {
            c.disk.lat_us = parse_in(v, 0..=1_000_000)?;
            Ok(())
        },
    },
    Key {
        name: "disk_bw",
        values: "MB/s, 0..=1000000 (0: unlimited)",
        help: "bandwidth of the RAM disk's modelled device (default 500, a SATA SSD)",
        set: |c, v| {
            c.disk.bw_mbps = parse_in(v, 0..=1_000_000)?;
            Ok(())
        },
    },
    Key {
        name: "disk_flush",
        values: "microseconds per cache flush, 0..=1000000 (0: free, a drive with power-loss protection)",
        help: "time the modelled device takes to write its cache out before each log write (default 1000, a consumer SATA SSD)",
        set: |c, v| {
            c.disk.flush_us = parse_in(v, 0..=1_000_000)?;
            Ok(())
        },
    },
    Key {
        name: "files",
        values: "a number of files, 1..=200000",
        help: "files the workload creates",
        set: |c, v| {
            c.workload.files = parse_in(v, 1..=200_000)?;
            Ok(())
        },
    },
    Key {
        name: "file_size",
        // The limit is FILE_SIZE_MAX (kernel_tests/boot.rs checks they agree).
        values: "a size or a range MIN-MAX (memparse units, e.g. 4K-28K; at most 4095K)",
        help: "file sizes, uniform in the range",
        set: |c, v| {
            let (a, b) = parse_size_range(v).ok_or(())?;
            c.workload.size_min = a;
            c.workload.size_max = b;
            Ok(())
        },
    },
    Key {
        name: "fanout",
        values: "files per directory, 1..=1000",
        help: "directory fan-out of the workload",
        set: |c, v| {
            c.workload.fanout = parse_in(v, 1..=1000)?;
            Ok(())
        },
    },
    Key {
        name: "mix",
        values: "read:N,write:N,readdir:N,unlink:N (percent; the rest is create)",
        help: "operation mix of the workload",
        set: |c, v| {
            c.workload.mix = Mix::parse(v).map_err(|_| ())?;
            Ok(())
        },
    },
    Key {
        name: "tasks",
        values: "worker tasks, 1..=64",
        help: "tasks running workload operations at once",
        set: |c, v| {
            c.workload.tasks = parse_in(v, 1..=64)?;
            Ok(())
        },
    },
    Key {
        name: "ops",
        values: "a number of operations",
        help: "operations the workload runs (over all tasks)",
        set: |c, v| {
            c.workload.ops = v.parse().map_err(|_| ())?;
            Ok(())
        },
    },
    Key {
        name: "seed",
        values: "a number",
        help: "random seed of the workload (same seed, same operations)",
        set: |c, v| {
            c.workload.seed = v.parse().map_err(|_| ())?;
            Ok(())
        },
    },
    Key {
        name: "sample_ms",
        values: "milliseconds, 1..=60000 (default 100)",
        help: "period of the workload's samples: the free-memory chart and format=json's sample lines",
        set: |c, v| {
            c.workload.sample_ms = parse_in(v, 1..=60_000)?;
            Ok(())
        },
    },
    Key {
        name: "app_pages",
        values: "pages, 0..=1024 (default 16, a program's 64 KiB of buffers; 0: the workload allocates nothing on its operation paths)",
        help: "application memory each worker faults in (GFP_HIGHUSER_MOVABLE) before each operation and frees after it",
        set: |c, v| {
            c.workload.app_pages = parse_in(v, 0..=crate::workload::APP_PAGES_MAX)?;
            Ok(())
        },
    },
    Key {
        name: "slab_debug",
        values: "Linux's letters F (consistency checks), Z (red zones), P (poisoning), - (none), optionally ,cache",
        help: "slab debugging for every cache or one cache (read at boot)",
        set: |c, v| {
            let (flags, only) = slab_debug_parse(v).map_err(|_| ())?;
            c.slab_debug = Some((flags, only.map(String::from)));
            Ok(())
        },
    },
    Key {
        name: "fail_page_alloc_min_order",
        values: "an order, 0..=10",
        help: "fail_page_alloc fails no request of a smaller order (Linux's min-order; default 0)",
        set: |c, v| {
            let o: u32 = v.parse().map_err(|_| ())?;
            if o > crate::mm::zone::MAX_ORDER {
                return Err(());
            }
            c.fail_page_alloc_min_order = Some(o);
            Ok(())
        },
    },
    Key {
        name: "oom",
        values: "kill|fail",
        help: "when reclaim gives up on an allocation Linux does not let fail (order <= 3, \
               __GFP_FS): kill the task with the largest footprint and retry, or fail it",
        set: |c, v| {
            c.oom = crate::mm::oom_kill::OomPolicy::by_name(v).ok_or(())?;
            Ok(())
        },
    },
    Key {
        name: "failslab",
        values: "<interval>,<probability %>,<space in bytes>,<times>",
        help: "fault injection: make slab allocations fail on purpose",
        set: |c, v| {
            c.failslab = Some(FaultSpec::parse(v).ok_or(())?);
            Ok(())
        },
    },
];

/// Why a command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// `token` is not of the form `key=value`.
    NotKeyValue {
        /// The token as given.
        token: String,
    },
    /// `key` is not one of [`KEYS`].
    UnknownKey {
        /// The token as given.
        token: String,
        /// The key part of it.
        key: String,
    },
    /// `key` exists but `value` is not one it takes.
    BadValue {
        /// The token as given.
        token: String,
        /// The key.
        key: &'static str,
        /// The values the key takes.
        expected: &'static str,
    },
}

fn valid_keys() -> String {
    KEYS.iter()
        .map(|k| k.name)
        .chain(KNOBS.iter().map(|k| k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotKeyValue { token } => write!(
                f,
                "bad command-line token '{token}': expected key=value; valid keys: {}",
                valid_keys()
            ),
            Self::UnknownKey { token, key } => write!(
                f,
                "unknown command-line key '{key}' in '{token}'; valid keys: {}",
                valid_keys()
            ),
            Self::BadValue {
                token,
                key,
                expected,
            } => write!(
                f,
                "bad value in '{token}': {key} takes {expected}; valid keys: {}",
                valid_keys()
            ),
        }
    }
}

impl Config {
    /// The policies the main job runs: the chosen era (or every era for
    /// `policy=all`) with the knob overrides applied.
    pub fn policies(&self) -> Vec<Policy> {
        let eras: &[Policy] = match &self.policy {
            PolicyChoice::One(p) => core::slice::from_ref(p),
            PolicyChoice::All => &Policy::ALL,
        };
        eras.iter()
            .map(|&era| {
                let mut p = era;
                for (k, v) in &self.knobs {
                    // Checked when parsed.
                    let _ = p.set_knob(k, v);
                }
                p
            })
            .collect()
    }

    /// Parses whitespace-separated `key=value` tokens; later tokens win.
    pub fn parse(cmdline: &str) -> Result<Config, CmdlineError> {
        let mut cfg = Config::default();
        for token in cmdline.split_whitespace() {
            cfg.apply_token(token)?;
        }
        Ok(cfg)
    }

    /// Applies one `key=value` token.
    pub fn apply_token(&mut self, token: &str) -> Result<(), CmdlineError> {
        let Some((key, value)) = token.split_once('=') else {
            return Err(CmdlineError::NotKeyValue {
                token: token.to_string(),
            });
        };
        if let Some(k) = crate::fs::policy::knob(key) {
            // Check the value now (the policy it applies to may come later).
            let mut p = Policy::DEFAULT;
            p.set_knob(key, value).map_err(|_| CmdlineError::BadValue {
                token: token.to_string(),
                key: k.name,
                expected: k.values,
            })?;
            let v = k.values.split('|').find(|v| *v == value).unwrap_or("");
            self.knobs.retain(|(n, _)| *n != k.name);
            self.knobs.push((k.name, v));
            return Ok(());
        }
        let Some(k) = KEYS.iter().find(|k| k.name == key) else {
            return Err(CmdlineError::UnknownKey {
                token: token.to_string(),
                key: key.to_string(),
            });
        };
        (k.set)(self, value).map_err(|()| CmdlineError::BadValue {
            token: token.to_string(),
            key: k.name,
            expected: k.values,
        })
    }

    /// Puts the configuration into effect (log level, scheduler, lockdep,
    /// fault injection). `mem=` and `min_free_kbytes=` took effect at boot.
    pub fn apply(&self) {
        crate::console::set_log_level(self.loglevel);
        crate::task::set_mode(self.sched);
        crate::sync::lockdep::set_mode(self.lockdep);
        if let Some(s) = self.fail_page_alloc {
            FAIL_PAGE_ALLOC.apply_spec(s);
        }
        if let Some(o) = self.fail_page_alloc_min_order {
            FAIL_PAGE_ALLOC.set_min_order(o);
        }
        if let Some(s) = self.failslab {
            FAILSLAB.apply_spec(s);
        }
        crate::mm::oom_kill::set_policy(self.oom);
    }

    /// What boot code needs before the main function parses the command
    /// line for real: every `key=value` token that parses, ignoring errors
    /// (reported later) and bare words (test filters).
    pub fn parse_early(cmdline: &str) -> Config {
        let mut cfg = Config::default();
        for token in cmdline.split_whitespace().filter(|t| t.contains('=')) {
            let _ = cfg.apply_token(token);
        }
        cfg
    }

    /// Parses the boot command line; on error prints one line and exits the
    /// machine with failure (no panic).
    pub fn from_cmdline_or_exit(cmdline: &str) -> Config {
        match Config::parse(cmdline) {
            Ok(c) => c,
            Err(e) => {
                crate::println!("kreclaim: {e}");
                crate::platform::exit(false)
            }
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lower case without allocating: fault injection may be armed.
        f.write_str("loglevel=")?;
        for c in self.loglevel.as_str().chars() {
            f.write_char(c.to_ascii_lowercase())?;
        }
        write!(
            f,
            " sched={} lockdep={} policy={}",
            match self.sched {
                SchedMode::Preemptive => "preempt",
                SchedMode::Cooperative => "coop",
            },
            match self.lockdep {
                LockdepMode::On => "on",
                LockdepMode::Off => "off",
                LockdepMode::Fatal => "fatal",
            },
            match self.policy {
                PolicyChoice::One(p) => p.name,
                PolicyChoice::All => "all",
            }
        )?;
        for (k, v) in &self.knobs {
            write!(f, " {k}={v}")?;
        }
        write!(f, " {}", self.disk)?;
        let w = &self.workload;
        write!(
            f,
            " files={} file_size={}-{} fanout={} mix={} tasks={} ops={} seed={} app_pages={}",
            w.files, w.size_min, w.size_max, w.fanout, w.mix, w.tasks, w.ops, w.seed, w.app_pages
        )?;
        if let Some(m) = self.mem {
            write!(f, " mem={}K", m >> 10)?;
        }
        if let Some(k) = self.min_free_kbytes {
            write!(f, " min_free_kbytes={k}")?;
        }
        if let Some(s) = self.fail_page_alloc {
            write!(f, " fail_page_alloc={s}")?;
        }
        if let Some(o) = self.fail_page_alloc_min_order {
            write!(f, " fail_page_alloc_min_order={o}")?;
        }
        if let Some(s) = self.failslab {
            write!(f, " failslab={s}")?;
        }
        write!(f, " oom={}", self.oom.name())?;
        if let Some((flags, only)) = &self.slab_debug {
            f.write_str(" slab_debug=")?;
            for (flag, letter) in [
                (SlabFlags::CONSISTENCY_CHECKS, "F"),
                (SlabFlags::RED_ZONE, "Z"),
                (SlabFlags::POISON, "P"),
            ] {
                if flags.contains(flag) {
                    f.write_str(letter)?;
                }
            }
            if flags.is_empty() {
                f.write_str("-")?;
            }
            if let Some(name) = only {
                write!(f, ",{name}")?;
            }
        }
        Ok(())
    }
}
