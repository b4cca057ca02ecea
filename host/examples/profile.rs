//! One benchmark workload alone, for a profiler: instruction counts from
//! `valgrind --tool=callgrind` do not depend on how loaded the machine is,
//! where `bench-summary`'s nanoseconds do.
//!
//! ```text
//! cargo build --release --manifest-path host/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu --example profile
//! valgrind --tool=callgrind target/x86_64-unknown-linux-gnu/release/examples/profile hot 1000000
//! ```
//!
//! Workloads: `hot` (kmalloc 64 B alloc+free), `cache-hot` (a 64-byte
//! kmem_cache), `churn` (kmalloc, 10,000 live objects of 16..256 B),
//! `threads` (the cache's hot path on 2 threads at once); the second
//! argument is the number of operations (per thread).

use kreclaim_host::Config;
use kreclaim_host::bench::{self, Kreclaim, KreclaimCache, Live};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("hot", String::as_str);
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    kreclaim_host::init(Config {
        arena_bytes: 512 << 20,
        lockdep: false,
        ..Config::default()
    })
    .expect("bring kreclaim up");
    match which {
        "hot" => bench::hot(&Kreclaim, 64, n),
        "cache-hot" => bench::hot(&KreclaimCache::new("profile-64", 64), 64, n),
        "churn" => {
            let mut l = Live::fill(&Kreclaim, 10_000, bench::small_size, 0x5eed);
            l.churn(&Kreclaim, n);
            l.drain(&Kreclaim);
        }
        "threads" => {
            let c = KreclaimCache::new("profile-64", 64);
            bench::threaded_hot(&c, 64, 2, n, 1);
        }
        other => panic!("unknown workload {other}"),
    }
}
