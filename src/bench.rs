//! Benchmarks run inside the kernel (`cargo run -- bench=...`). Figures are
//! TSC cycles per operation, best of several rounds, printed as a table or,
//! with `format=json`, one JSON object per line. Timing never decides a test.

use crate::sync::lockdep::{self, LockdepMode};
use crate::sync::{Mutex, RwSemaphore, SpinLock};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Output format of benchmarks and reports (`format=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

const ROUNDS: usize = 7;

/// Cycles per call of `f`, the best of [`ROUNDS`] rounds of `iters` calls.
pub fn cycles_per_op(iters: u64, mut f: impl FnMut()) -> f64 {
    // Warm up caches and lazily registered lock classes.
    for _ in 0..iters.min(1000) {
        f();
    }
    let mut best = u64::MAX;
    for _ in 0..ROUNDS {
        let t0 = crate::time::cycles();
        for _ in 0..iters {
            f();
        }
        best = best.min(crate::time::cycles() - t0);
    }
    best as f64 / iters as f64
}

/// Escapes a string for a JSON value.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct LockRow {
    name: &'static str,
    lockdep: &'static str,
    cycles: f64,
}

/// `bench=locks`: uncontended lock+unlock for each lock kind, with lockdep on
/// and off, measured in the same run.
pub fn locks(format: Format) {
    const ITERS: u64 = 20_000;
    static SPIN: SpinLock<u64> = SpinLock::new(0, crate::lock_class!("bench_spinlock"));
    static MUTEX: Mutex<u64> = Mutex::new(0, crate::lock_class!("bench_mutex"));
    static RWSEM: RwSemaphore<u64> = RwSemaphore::new(0, crate::lock_class!("bench_rwsem"));
    let peer = spin::Mutex::new(0u64);
    let saved = lockdep::mode();
    let mut rows = Vec::new();
    for (mode, label) in [(LockdepMode::On, "on"), (LockdepMode::Off, "off")] {
        lockdep::set_mode(mode);
        let mut run = |name: &'static str, f: &mut dyn FnMut()| {
            rows.push(LockRow {
                name,
                lockdep: label,
                cycles: cycles_per_op(ITERS, f),
            })
        };
        run("spinlock lock+unlock (irqsave)", &mut || *SPIN.lock() += 1);
        run("spinlock try_lock+unlock", &mut || {
            if let Some(mut g) = SPIN.try_lock() {
                *g += 1;
            }
        });
        run("mutex lock+unlock", &mut || *MUTEX.lock() += 1);
        run("mutex try_lock+unlock", &mut || {
            if let Some(mut g) = MUTEX.try_lock() {
                *g += 1;
            }
        });
        run("rwsem down_read+up_read", &mut || {
            core::hint::black_box(*RWSEM.down_read());
        });
        run("rwsem down_write+up_write", &mut || {
            *RWSEM.down_write() += 1
        });
        run("rwsem try_read+up_read", &mut || {
            if let Some(g) = RWSEM.try_read() {
                core::hint::black_box(*g);
            }
        });
    }
    lockdep::set_mode(saved);
    let peer_cycles = cycles_per_op(ITERS, || *peer.lock() += 1);
    match format {
        Format::Text => {
            crate::println!(
                "bench=locks: uncontended cost, TSC cycles per lock+unlock (best of {ROUNDS} rounds)"
            );
            crate::println!(
                "{:<34} {:>14} {:>14} {:>10}",
                "lock",
                "lockdep on",
                "lockdep off",
                "on/off"
            );
            let names: Vec<&str> = rows
                .iter()
                .filter(|r| r.lockdep == "on")
                .map(|r| r.name)
                .collect();
            for n in names {
                let on = rows
                    .iter()
                    .find(|r| r.name == n && r.lockdep == "on")
                    .unwrap()
                    .cycles;
                let off = rows
                    .iter()
                    .find(|r| r.name == n && r.lockdep == "off")
                    .unwrap()
                    .cycles;
                crate::println!(
                    "{:<34} {:>14.1} {:>14.1} {:>9.2}x",
                    n,
                    on,
                    off,
                    on / off.max(0.001)
                );
            }
            crate::println!(
                "{:<34} {:>14} {:>14.1}   (peer: spin crate, no IRQ masking, no lockdep)",
                "spin::Mutex lock+unlock",
                "-",
                peer_cycles
            );
        }
        Format::Json => {
            for r in &rows {
                crate::println!(
                    "{{\"kind\":\"bench\",\"name\":{},\"lockdep\":\"{}\",\"cycles\":{:.1}}}",
                    json_str(r.name),
                    r.lockdep,
                    r.cycles
                );
            }
            crate::println!(
                "{{\"kind\":\"bench\",\"name\":\"spin::Mutex lock+unlock (peer)\",\"lockdep\":\"off\",\"cycles\":{peer_cycles:.1}}}"
            );
        }
    }
}
