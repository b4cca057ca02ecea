//! Criterion benchmarks: kreclaim against talc, linked_list_allocator,
//! buddy_system_allocator and the system allocator on the same workloads
//! (`cargo bench --manifest-path host/Cargo.toml --target x86_64-unknown-linux-gnu`,
//! or `cargo bench` from host/). `bench-summary` prints the same comparison
//! as one table with ratios; these give criterion's statistics and history.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kreclaim_host::Config;
use kreclaim_host::bench::{
    self, BenchAlloc, Buddy, Kreclaim, KreclaimCache, LinkedList, Live, Sys, Talc,
};
use std::time::Duration;

fn allocators() -> Vec<Box<dyn BenchAlloc>> {
    kreclaim_host::init(Config {
        arena_bytes: 512 << 20,
        lockdep: false,
        ..Config::default()
    })
    .expect("bring kreclaim up");
    vec![
        Box::new(Kreclaim),
        Box::new(Talc::new()),
        Box::new(LinkedList::new()),
        Box::new(Buddy::new()),
        Box::new(Sys),
    ]
}

fn benches(c: &mut Criterion) {
    let all = allocators();
    let cache = KreclaimCache::new("criterion-64", 64);

    let mut g = c.benchmark_group("hot alloc+free 64 B");
    g.bench_function("kreclaim kmem_cache", |b| {
        b.iter_custom(|n| time(|| bench::hot(&cache, 64, n)))
    });
    for a in &all {
        g.bench_function(a.name(), |b| {
            b.iter_custom(|n| time(|| bench::hot(a.as_ref(), 64, n)))
        });
    }
    g.finish();

    for live in [10_000usize, 100_000] {
        let mut g = c.benchmark_group(format!("churn {live} live 16..256 B"));
        for a in &all {
            let mut l = Live::fill(a.as_ref(), live, bench::small_size, 1);
            g.bench_function(BenchmarkId::from_parameter(a.name()), |b| {
                b.iter_custom(|n| time(|| l.churn(a.as_ref(), n)))
            });
            l.drain(a.as_ref());
        }
        g.finish();
    }

    let mut g = c.benchmark_group("mixed 8..4096 B, 1000 live");
    for a in &all {
        let mut l = Live::fill(a.as_ref(), 1000, bench::mixed_size, 2);
        g.bench_function(BenchmarkId::from_parameter(a.name()), |b| {
            b.iter_custom(|n| time(|| l.churn(a.as_ref(), n)))
        });
        l.drain(a.as_ref());
    }
    g.finish();

    for (order, batch) in [(0u32, 64usize), (3, 16)] {
        let mut g = c.benchmark_group(format!("order-{order} blocks"));
        for a in &all {
            g.bench_function(BenchmarkId::from_parameter(a.name()), |b| {
                b.iter_custom(|n| {
                    let rounds = n.div_ceil(batch as u64);
                    let t = std::time::Instant::now();
                    bench::blocks(a.as_ref(), order, batch, rounds);
                    t.elapsed()
                        .mul_f64(n as f64 / (rounds * batch as u64) as f64)
                })
            });
        }
        g.finish();
    }
}

fn time(f: impl FnOnce()) -> Duration {
    let t = std::time::Instant::now();
    f();
    t.elapsed()
}

criterion_group! {
    name = alloc;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(alloc);
