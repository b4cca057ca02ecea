//! What `cargo run` prints after a workload: slab caches, shrinkers,
//! reclaim, lockdep, the integrity verdict and a chart of free memory over
//! time; and, for `policy=all`, one comparison table. `format=json` prints
//! one JSON object per line instead. Printing allocates nothing: the
//! report may follow a run with fault injection still armed.

#![deny(missing_docs)]

use crate::bench::Format;
use crate::workload::{RunResult, Sample};
use core::fmt;

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

/// A JSON string literal, escaped as `bench::json_str` does, formatted
/// without allocating.
struct JsonStr<'a>(&'a str);

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        f.write_str("\"")
    }
}

/// A policy's resolved knobs as a JSON object.
struct KnobsJson<'a>(&'a crate::fs::policy::Policy);

impl fmt::Display for KnobsJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, k) in crate::fs::policy::KNOBS.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", JsonStr(k.name), JsonStr(k.get(self.0)))?;
        }
        f.write_str("}")
    }
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

/// The full report of one run.
pub fn single(r: &RunResult) {
    crate::println!("\n=== kreclaim report: policy {} ===", r.policy);
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
        "inodes: read {}, cached {}, reclaimable {}, scanned {}, reclaimed {}, requeued dirty {} / locked {} / flushing {}",
        f.inode_reads,
        f.inodes_cached,
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
    crate::println!("\n--- reclaim ---");
    crate::println!(
        "direct reclaim: {} stalls, {} ms stalled, {} pages; kswapd: {} pages; allocation failures: {}",
        r.alloc_stalls,
        ms(r.stall_ns),
        r.direct_pages,
        r.kswapd_pages,
        r.alloc_failures
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
            " (xfs_ilock <-> fs_reclaim)"
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

/// One JSON object for a run.
pub fn json(r: &RunResult) {
    crate::println!(
        "{{\"kind\":\"policy_result\",\"policy\":{},\"knobs\":{},\"ops\":{},\"ops_per_sec\":{},\"lockdep_reports\":{},\"deadlocks\":{},\"inodes_scanned\":{},\"inodes_reclaimed\":{},\"shrinker_stops\":{},\"shrinker_deferred\":{},\"alloc_failures\":{},\"direct_reclaim_stalls\":{},\"stall_ms\":{},\"kswapd_pages\":{},\"reclaim_writebacks\":{},\"errors\":{},\"short_writes\":{},\"populate_errors\":{},\"injected_failures\":{},\"injected_page_alloc\":{},\"injected_slab\":{},\"failed_by_injection\":{},\"integrity\":\"{}\"}}",
        JsonStr(r.policy.name),
        KnobsJson(&r.policy),
        r.ops,
        ops_per_sec(r),
        r.lockdep_reports,
        r.deadlocks,
        r.ops_phase.inodes_scanned,
        r.ops_phase.inodes_reclaimed,
        r.ops_phase.shrinker_stops,
        r.inode_shrinker_deferred,
        r.alloc_failures,
        r.alloc_stalls,
        r.stall_ns / 1_000_000,
        r.kswapd_pages,
        r.fs.reclaim_writebacks,
        r.errors,
        r.short_writes,
        r.populate_errors,
        r.injected_page_alloc + r.injected_slab,
        r.injected_page_alloc,
        r.injected_slab,
        r.injected_errors,
        if r.integrity_ok { "ok" } else { "FAILED" }
    );
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
