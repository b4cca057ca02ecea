//! What `cargo run` prints after a workload: slab caches, shrinkers,
//! reclaim, lockdep, the integrity verdict and a chart of free memory over
//! time; and, for `policy=all`, one comparison table. `format=json` prints
//! one JSON object per line instead, on the data stream (standard output;
//! the log goes to standard error), written by [`JsonWriter`]. Printing
//! allocates nothing: the report may follow a run with fault injection
//! still armed.

#![deny(missing_docs)]

use crate::config::Format;
use crate::json::JsonEscape;
pub use crate::json::{JsonStr, JsonWriter, json_line};
use crate::workload::{RunResult, Sample};
use core::fmt::{self, Write as _};

/// Milliseconds with three decimals, formatted without allocating.
struct Ms(u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1_000_000, self.0 / 1000 % 1000)
    }
}

fn ms(ns: u64) -> Ms {
    Ms(ns)
}

/// The configuration of this boot, for every result object; set once by
/// the main function ([`set_config`]).
static CONFIG: spin::Once<crate::config::Config> = spin::Once::new();

/// Records the configuration that result objects carry (`"config"`).
pub fn set_config(c: crate::config::Config) {
    crate::json::set_json_mode(c.format == crate::config::Format::Json);
    CONFIG.call_once(|| c);
}

/// The fields every result object starts with: `kind`, the kreclaim
/// version and git commit, CPUs, RAM and the configuration (every key of
/// [`crate::config::KEYS`] as resolved).
pub fn result_header<W: fmt::Write>(j: &mut JsonWriter<W>, kind: &str) {
    use crate::mm::page_alloc;
    let managed = page_alloc::managed_pages();
    let w = page_alloc::watermarks();
    j.field_str("kind", kind)
        .field_str("version", env!("CARGO_PKG_VERSION"))
        .field_str("commit", env!("KRECLAIM_GIT_COMMIT"))
        .field_u64("cpus", crate::platform::nr_cpus() as u64);
    j.key("ram")
        .begin_object()
        .field_u64("managed_pages", managed)
        .field_u64("managed_mib", (managed * 4096) >> 20)
        .field_u64("min_free_kbytes", page_alloc::min_free_kbytes())
        .key("watermark_pages")
        .begin_object()
        .field_u64("min", w.min)
        .field_u64("low", w.low)
        .field_u64("high", w.high)
        .end_object()
        .end_object();
    j.key("config");
    match CONFIG.get() {
        Some(c) => config_json(c, j),
        None => {
            j.null();
        }
    }
}

/// Splits `Config`'s `key=value ...` display into JSON members as it is
/// written, noting which keys it gave.
struct ConfigMembers<'a, W> {
    j: &'a mut JsonWriter<W>,
    key: [u8; 32],
    key_len: usize,
    in_value: bool,
    seen: u64,
}

impl<W: fmt::Write> ConfigMembers<'_, W> {
    fn end_value(&mut self) {
        if self.in_value {
            self.j.raw("\"");
            self.in_value = false;
        }
        self.key_len = 0;
    }
}

impl<W: fmt::Write> fmt::Write for ConfigMembers<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == ' ' {
                self.end_value();
            } else if self.in_value {
                let mut b = [0; 4];
                let mut e = JsonEscape(&mut self.j.out);
                fmt::Write::write_str(&mut e, c.encode_utf8(&mut b))?;
            } else if c == '=' {
                let k = core::str::from_utf8(&self.key[..self.key_len]).unwrap_or("?");
                if let Some(i) = crate::config::KEYS.iter().position(|x| x.name == k) {
                    self.seen |= 1 << i.min(63);
                }
                self.j.key(k);
                self.j.value();
                self.j.raw("\"");
                self.in_value = true;
            } else if self.key_len < self.key.len() && c.is_ascii() {
                self.key[self.key_len] = c as u8;
                self.key_len += 1;
            }
        }
        Ok(())
    }
}

/// `"config":{...}`: every key of [`crate::config::KEYS`], as a string the
/// command line takes. The values `Config`'s display shows (what the
/// banner prints), then the keys it leaves out when at their default,
/// resolved here; a key this function does not know yet is `null`.
pub fn config_json<W: fmt::Write>(c: &crate::config::Config, j: &mut JsonWriter<W>) {
    use crate::config::Format;
    use crate::config::{Bench, KEYS};
    j.begin_object();
    let mut m = ConfigMembers {
        j,
        key: [0; 32],
        key_len: 0,
        in_value: false,
        seen: 0,
    };
    let _ = write!(m, "{c}");
    m.end_value();
    let seen = m.seen;
    for (i, k) in KEYS.iter().enumerate() {
        if i < 64 && seen & (1 << i) != 0 {
            continue;
        }
        j.key(k.name);
        match k.name {
            "bench" => j.str(match c.bench {
                None => "none",
                Some(Bench::Locks) => "locks",
                Some(Bench::Mm) => "mm",
                Some(Bench::Smp) => "smp",
            }),
            "format" => j.str(match c.format {
                Format::Text => "text",
                Format::Json => "json",
            }),
            "mem" => j.str("all"),
            "min_free_kbytes" => j.display(crate::mm::page_alloc::min_free_kbytes()),
            "fail_page_alloc" | "failslab" => j.str("off"),
            "fail_page_alloc_min_order" => j.str("0"),
            "ramdisk" => match c.ramdisk {
                Some(b) => j.display(format_args!("{}K", b >> 10)),
                None => j.str("none"),
            },
            "slab_debug" => j.str("-"),
            "sample_ms" => j.display(c.workload.sample_ms),
            _ => j.null(),
        };
    }
    j.end_object();
}

/// `{...}`: the policy's resolved knobs, by name (every knob of
/// [`crate::fs::policy::KNOBS`], as the command line takes it). The one
/// place that writes them, for every result object.
pub fn policy_knobs_json<W: fmt::Write>(p: &crate::fs::policy::Policy, j: &mut JsonWriter<W>) {
    j.begin_object();
    for k in crate::fs::policy::KNOBS {
        j.field_str(k.name, k.get(p));
    }
    j.end_object();
}

/// Writes straight to the console.
struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::print!("{s}");
        Ok(())
    }
}

fn ops_per_sec(r: &RunResult) -> u64 {
    (r.ops * 1_000_000_000)
        .checked_div(r.elapsed_ns)
        .unwrap_or(0)
}

/// A text chart of free memory over the run: one column per time slice,
/// rows from the highest free count down to zero.
pub fn free_memory_chart(samples: &[Sample], width: usize, height: usize) {
    if samples.is_empty() {
        crate::println!("(no samples)");
        return;
    }
    let managed = crate::mm::page_alloc::managed_pages().max(1);
    let w = crate::mm::page_alloc::watermarks();
    let cols = width.min(samples.len());
    let col = |c: usize| -> u64 {
        let a = c * samples.len() / cols;
        let b = ((c + 1) * samples.len() / cols).max(a + 1);
        samples[a..b]
            .iter()
            .map(|s| s.free_pages)
            .min()
            .unwrap_or(0)
    };
    let top = (0..cols)
        .map(col)
        .max()
        .unwrap_or(0)
        .max(w.high * 2)
        .min(managed);
    crate::println!(
        "free memory over time (KiB; {} samples, {} ms; min of each column; L=low H=high watermark)",
        samples.len(),
        samples.last().map(|s| s.ms).unwrap_or(0)
    );
    for row in (1..=height).rev() {
        let level = top * row as u64 / height as u64;
        let prev = top * (row as u64 - 1) / height as u64;
        let mark = if w.high > prev && w.high <= level {
            'H'
        } else if w.low > prev && w.low <= level {
            'L'
        } else {
            ' '
        };
        crate::print!("{:>7} {mark}|", level * 4);
        let mut line = [b' '; 64];
        for start in (0..cols).step_by(line.len()) {
            let n = (cols - start).min(line.len());
            for (i, b) in line[..n].iter_mut().enumerate() {
                *b = if col(start + i) >= level { b'#' } else { b' ' };
            }
            crate::print!("{}", core::str::from_utf8(&line[..n]).unwrap_or(""));
        }
        crate::println!();
    }
    crate::print!("{:>7}  +", 0);
    for _ in 0..cols {
        crate::print!("-");
    }
    crate::println!();
}

/// Which CPUs the run's workers used and how many task switches each CPU
/// made during the operations phase.
fn cpu_spread(r: &RunResult) {
    crate::print!(
        "cpu spread: workers ran on {} CPU(s) (",
        r.worker_cpus.count_ones()
    );
    let mut first = true;
    for c in 0..crate::platform::NR_CPUS {
        if r.worker_cpus & (1 << c) != 0 {
            crate::print!("{}{c}", if first { "" } else { "," });
            first = false;
        }
    }
    crate::print!("); task switches per CPU:");
    for c in 0..crate::platform::nr_cpus().min(crate::platform::NR_CPUS) {
        crate::print!(" cpu{c}={}", r.cpu_switches[c]);
    }
    crate::println!();
}

/// The full report of one run.
pub fn single(r: &RunResult) {
    crate::println!("\n=== kreclaim report: policy {} ===", r.policy);
    crate::println!("cpus: {} online", crate::platform::nr_cpus());
    cpu_spread(r);
    crate::println!("knobs: {}", r.policy.knobs());
    crate::println!(
        "workload: {} ops in {} ms ({} ops/s), {} errors; populate: {} files failed; {} short writes in all",
        r.ops,
        ms(r.elapsed_ns),
        ops_per_sec(r),
        r.errors,
        r.populate_errors,
        r.short_writes
    );
    if r.app_pages_faulted + r.app_fault_failures > 0 {
        crate::println!(
            "application memory: {} pages faulted in (GFP_HIGHUSER_MOVABLE, app_pages=); {} operations skipped for lack of it",
            r.app_pages_faulted,
            r.app_fault_failures
        );
    }
    if crate::mm::fault_inject::FAIL_PAGE_ALLOC.is_enabled()
        || crate::mm::fault_inject::FAILSLAB.is_enabled()
        || r.injected_page_alloc + r.injected_slab > 0
    {
        crate::println!(
            "fault injection: {} failures injected (fail_page_alloc {}, failslab {}); {} operations failed because of them",
            r.injected_page_alloc + r.injected_slab,
            r.injected_page_alloc,
            r.injected_slab,
            r.injected_errors
        );
    }
    crate::println!("\n--- slab caches (end of run) ---");
    let _ = crate::mm::slab::slabinfo_header(&mut Console);
    for s in r
        .slabs
        .iter()
        .filter(|s| s.num_slabs > 0 || !s.name.starts_with("kmalloc"))
    {
        let _ = crate::mm::slab::slabinfo_row(&mut Console, &s.name, s);
    }
    crate::println!("\n--- shrinkers (end of run) ---");
    crate::println!(
        "{:<14} {:>5} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6}",
        "shrinker",
        "seeks",
        "batch",
        "calls",
        "scans",
        "scanned",
        "freed",
        "max defer",
        "pending",
        "STOPs"
    );
    for s in &r.shrinkers {
        crate::println!(
            "{:<14} {:>5} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6}",
            s.name,
            s.seeks,
            s.batch,
            s.calls,
            s.scan_calls,
            s.scanned,
            s.freed,
            s.deferred_peak,
            s.nr_deferred,
            s.stops
        );
    }
    crate::println!("\n--- inode cache ---");
    let f = &r.fs;
    crate::println!(
        "inodes: read {}, cached {}, on the LRU {} (second chances {}, pruned {}), reclaimable {}, scanned {}, reclaimed {}, requeued dirty {} / locked {} / flushing {}",
        f.inode_reads,
        f.inodes_cached,
        f.inodes_lru,
        f.inodes_lru_rotated,
        f.inodes_pruned,
        f.inodes_reclaimable,
        f.inodes_scanned,
        f.inodes_reclaimed,
        f.inodes_requeued_dirty,
        f.inodes_requeued_locked,
        f.inodes_requeued_flushing
    );
    crate::println!(
        "cluster flushes {}, flush errors {}, trylock skips {}; buffers cached {}, reclaimed {}; inode shrinker STOPs {}",
        f.cluster_flushes,
        f.flush_errors,
        f.flush_trylock_skips,
        f.buffers_cached,
        f.buffers_reclaimed,
        f.shrinker_stops
    );
    crate::println!(
        "log: {} checkpoints; reclaim waited for {} log forces ({} in direct reclaim), requeued {} pinned inodes; \
         direct reclaim waited {} µs for the device (disk model)",
        f.log_checkpoints,
        f.reclaim_log_forces,
        r.ops_phase.direct_reclaim_log_forces,
        f.inodes_requeued_pinned,
        r.ops_phase.direct_reclaim_io_wait_ns / 1000
    );
    crate::println!("\n--- reclaim ---");
    let parts = &r.stall_parts;
    crate::println!(
        "direct reclaim: {} stalls, {} ms stalled (pfmemalloc_wait {} ms, no-progress throttle {} ms, \
         locks {} ms, log/device {} ms, rest {} ms), {} pages; kswapd: {} pages; allocation failures: {}; \
         OOM-killed workers: {} (oom={})",
        r.alloc_stalls,
        ms(r.stall_ns),
        ms(parts.pfmemalloc_ns),
        ms(parts.noprogress_ns),
        ms(parts.lock_ns),
        ms(parts.io_ns),
        ms(parts.rest_ns(r.stall_ns)),
        r.direct_pages,
        r.kswapd_pages,
        r.alloc_failures,
        r.workers_oom_killed,
        crate::mm::oom_kill::policy().name()
    );
    crate::mm::page_alloc::show_mem();
    crate::println!("\n--- lockdep ---");
    crate::println!(
        "mode {:?}: {} classes, {} dependencies, {} reports in this run{}",
        crate::sync::lockdep::mode(),
        crate::sync::lockdep::class_count(),
        crate::sync::lockdep::dependency_count(),
        r.lockdep_reports,
        if r.lockdep_ilock_fs_reclaim {
            " (an ILOCK class <-> fs_reclaim)"
        } else {
            ""
        }
    );
    if let Some(t) = &r.first_lockdep_report {
        crate::println!("first report:\n{t}");
    }
    crate::println!("real deadlocks detected: {}", r.deadlocks);
    crate::println!("\n--- integrity ---");
    crate::println!(
        "integrity: {} ({})",
        if r.integrity_ok { "ok" } else { "FAILED" },
        r.integrity_detail
    );
    crate::println!();
    free_memory_chart(&r.samples, 72, 12);
}

/// One JSON object for a run (`"kind":"policy_result"`), on one line of
/// the data stream.
pub fn json(r: &RunResult) {
    json_line(|j| result_json(r, j));
}

/// The `policy_result` object of a run: the header ([`result_header`]),
/// the policy and its knobs, and every figure of the run.
pub fn result_json<W: fmt::Write>(r: &RunResult, j: &mut JsonWriter<W>) {
    j.begin_object();
    result_header(j, "policy_result");
    j.field_str("policy", r.policy.name).key("knobs");
    policy_knobs_json(&r.policy, j);
    j.field_u64("worker_cpus", r.worker_cpus.count_ones() as u64);
    j.field_u64("ops", r.ops)
        .field_u64("ops_requested", r.ops_requested)
        .field_u64("ops_per_sec", ops_per_sec(r))
        .field_u64("elapsed_ms", r.elapsed_ns / 1_000_000)
        .field_u64("errors", r.errors)
        .field_u64("short_writes", r.short_writes)
        .field_u64("populate_errors", r.populate_errors)
        .field_u64("workers_failed", r.workers_failed)
        .field_u64("lockdep_reports", r.lockdep_reports as u64)
        .field_bool("lockdep_ilock_fs_reclaim", r.lockdep_ilock_fs_reclaim)
        .key("first_lockdep_report");
    match &r.first_lockdep_report {
        Some(t) => j.str(t),
        None => j.null(),
    };
    j.field_u64("deadlocks", r.deadlocks as u64)
        .field_u64("inodes_scanned", r.ops_phase.inodes_scanned)
        .field_u64("inodes_reclaimed", r.ops_phase.inodes_reclaimed)
        .field_u64("shrinker_stops", r.ops_phase.shrinker_stops)
        .field_u64("shrinker_deferred", r.inode_shrinker_deferred)
        .field_u64("alloc_failures", r.alloc_failures)
        .field_u64("direct_reclaim_stalls", r.alloc_stalls)
        .field_u64("stall_ms", r.stall_ns / 1_000_000)
        .field_u64("stall_ns", r.stall_ns)
        .field_u64("stall_pfmemalloc_ns", r.stall_parts.pfmemalloc_ns)
        .field_u64("stall_noprogress_ns", r.stall_parts.noprogress_ns)
        .field_u64("stall_lock_ns", r.stall_parts.lock_ns)
        .field_u64("stall_io_ns", r.stall_parts.io_ns)
        .field_u64("stall_rest_ns", r.stall_parts.rest_ns(r.stall_ns))
        .field_u64("direct_reclaim_pages", r.direct_pages)
        .field_u64("kswapd_pages", r.kswapd_pages)
        .field_u64("reclaim_writebacks", r.fs.reclaim_writebacks)
        .field_u64("log_checkpoints", r.fs.log_checkpoints)
        .field_u64("reclaim_log_forces", r.fs.reclaim_log_forces)
        .field_u64(
            "direct_reclaim_log_forces",
            r.ops_phase.direct_reclaim_log_forces,
        )
        .field_u64(
            "direct_reclaim_io_wait_us",
            r.ops_phase.direct_reclaim_io_wait_ns / 1000,
        )
        .field_u64("oom_kills", r.workers_oom_killed)
        .field_u64("app_pages_faulted", r.app_pages_faulted)
        .field_u64("app_fault_failures", r.app_fault_failures)
        .field_str("oom", crate::mm::oom_kill::policy().name());
    j.key("shrinkers").begin_array();
    for s in &r.shrinkers {
        j.begin_object()
            .field_str("name", &s.name)
            .field_u64("seeks", s.seeks as u64)
            .field_u64("batch", s.batch)
            .field_u64("calls", s.calls)
            .field_u64("scan_calls", s.scan_calls)
            .field_u64("scanned", s.scanned)
            .field_u64("freed", s.freed)
            .field_u64("stops", s.stops)
            .field_u64("deferred_peak", s.deferred_peak)
            .key("nr_deferred")
            .i64(s.nr_deferred)
            .field_u64("violations", s.violations)
            .end_object();
    }
    j.end_array();
    let f = &r.fs;
    j.key("inode_cache")
        .begin_object()
        .field_u64("reads", f.inode_reads)
        .field_u64("cached", f.inodes_cached)
        .field_u64("lru", f.inodes_lru)
        .field_u64("lru_rotated", f.inodes_lru_rotated)
        .field_u64("pruned", f.inodes_pruned)
        .field_u64("reclaimable", f.inodes_reclaimable)
        .field_u64("scanned", f.inodes_scanned)
        .field_u64("reclaimed", f.inodes_reclaimed)
        .field_u64("requeued_dirty", f.inodes_requeued_dirty)
        .field_u64("requeued_locked", f.inodes_requeued_locked)
        .field_u64("requeued_flushing", f.inodes_requeued_flushing)
        .field_u64("requeued_pinned", f.inodes_requeued_pinned)
        .field_u64("iflock_waits", f.reclaim_iflock_waits)
        .field_u64("cluster_flushes", f.cluster_flushes)
        .field_u64("flush_errors", f.flush_errors)
        .field_u64("flush_trylock_skips", f.flush_trylock_skips)
        .field_u64("buffers_cached", f.buffers_cached)
        .field_u64("buffers_reclaimed", f.buffers_reclaimed)
        .end_object();
    j.field_u64("injected_failures", r.injected_page_alloc + r.injected_slab)
        .field_u64("injected_page_alloc", r.injected_page_alloc)
        .field_u64("injected_slab", r.injected_slab)
        .field_u64("failed_by_injection", r.injected_errors)
        .field_u64("samples", r.samples.len() as u64)
        .field_u64("files_verified", r.files_verified)
        .field_str("integrity", if r.integrity_ok { "ok" } else { "FAILED" })
        .field_str("integrity_detail", &r.integrity_detail)
        .end_object();
}

/// The `policy=all` comparison table.
pub fn comparison(results: &[RunResult], format: Format) {
    if format == Format::Json {
        for r in results {
            json(r);
        }
        return;
    }
    crate::println!(
        "\n=== policy comparison (same workload and seed; reclaim figures of the operations phase) ==="
    );
    crate::println!("cpus: {} online", crate::platform::nr_cpus());
    crate::println!(
        "{:<10} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>9} {:>6} {:>8}",
        "policy",
        "ops",
        "ops/s",
        "lockdep",
        "deadlock",
        "scanned",
        "reclaimed",
        "STOPs",
        "deferred",
        "stalls",
        "stall ms",
        "fails",
        "integrity"
    );
    for r in results {
        crate::println!(
            "{:<10} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>9} {:>6} {:>8}",
            r.policy.name,
            r.ops,
            ops_per_sec(r),
            r.lockdep_reports,
            r.deadlocks,
            r.ops_phase.inodes_scanned,
            r.ops_phase.inodes_reclaimed,
            r.ops_phase.shrinker_stops,
            r.inode_shrinker_deferred,
            r.alloc_stalls,
            r.stall_ns / 1_000_000,
            r.alloc_failures,
            if r.integrity_ok { "ok" } else { "FAILED" }
        );
    }
}
