//! One table of ns/op for kreclaim and its peers, measured in this run, with
//! the ratio of each peer to kreclaim, the project's performance goals as
//! met / not met, and a real program (a word index) run with kreclaim as
//! `#[global_allocator]` against the system allocator.
//!
//! `cargo run --release --manifest-path host/Cargo.toml --bin bench-summary`
//! (or `cargo host-bench` from the repository root). Timing is
//! `std::time::Instant`, best of several rounds; nothing here is a test.

use kreclaim::mm::slab::{KmemCache, SlabFlags};
use kreclaim::sync::lockdep::{self, LockdepMode};
use kreclaim_host::bench::{
    self, BenchAlloc, Buddy, Kreclaim, KreclaimCache, LinkedList, Live, Sys, Talc,
};
use kreclaim_host::global::{self, KreclaimGlobal};
use kreclaim_host::{Config, wordindex};
use std::process::Command;
use std::time::{Duration, Instant};

const ARENA: usize = 512 << 20;

/// System allocator unless `--word-index kreclaim` switches it on.
#[global_allocator]
static GLOBAL: KreclaimGlobal = KreclaimGlobal::new(ARENA, false);

const ROUNDS: usize = 5;
/// Operations per thread in the multi-thread row.
const MT_OPS: u64 = 2_000_000;
const ROUND_TIME: Duration = Duration::from_millis(40);

/// Best-of-ROUNDS ns per operation of `f(iters)`, after calibrating
/// `iters` so that a round takes about ROUND_TIME.
fn measure(mut f: impl FnMut(u64) -> u64) -> f64 {
    let mut iters = 16;
    loop {
        let t = Instant::now();
        f(iters);
        if t.elapsed() >= ROUND_TIME / 4 || iters >= 1 << 26 {
            break;
        }
        iters *= 2;
    }
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let ops = f(iters);
            t.elapsed().as_nanos() as f64 / ops as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn hot(a: &dyn BenchAlloc, size: usize) -> f64 {
    measure(|n| {
        bench::hot(a, size, n);
        n
    })
}

fn churn(a: &dyn BenchAlloc, live: usize, sizes: fn(&mut bench::Rng) -> std::alloc::Layout) -> f64 {
    let mut l = Live::fill(a, live, sizes, 0x5eed);
    let r = measure(|n| {
        l.churn(a, n);
        n
    });
    l.drain(a);
    r
}

fn blocks(a: &dyn BenchAlloc, order: u32, batch: usize) -> f64 {
    measure(|n| bench::blocks(a, order, batch, n.div_ceil(batch as u64)))
}

struct Row {
    name: &'static str,
    kreclaim: f64,
    peers: Vec<f64>,
}

fn word_index_child(which: &str) {
    GLOBAL.set_enabled(which == "kreclaim");
    let t = Instant::now();
    let sum = wordindex::run(12_000, 150, 30_000);
    let ns = t.elapsed().as_nanos();
    GLOBAL.set_enabled(false);
    println!("{ns} {sum} {}", global::fallbacks());
}

fn word_index(which: &str) -> (f64, u64, u64) {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--word-index", which])
        .output()
        .expect("run the word-index child");
    assert!(out.status.success(), "word index ({which}) failed: {out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0] as f64 / 1e6, v[1], v[2])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--word-index" {
        return word_index_child(&args[2]);
    }
    kreclaim_host::init(Config {
        arena_bytes: ARENA,
        lockdep: false,
        ..Config::default()
    })
    .expect("bring kreclaim up");

    let k = Kreclaim;
    let talc = Talc::new();
    let lla = LinkedList::new();
    let buddy = Buddy::new();
    let sys = Sys;
    let peers: [&dyn BenchAlloc; 4] = [&talc, &lla, &buddy, &sys];
    let cache = KreclaimCache::new("bench-64", 64);

    let mut rows = Vec::new();
    let mut row = |name, f: &dyn Fn(&dyn BenchAlloc) -> f64| {
        eprintln!("measuring {name} ...");
        let kreclaim = f(&k);
        let peers = peers.iter().map(|p| f(*p)).collect();
        rows.push(Row {
            name,
            kreclaim,
            peers,
        });
    };
    row("hot alloc+free 64 B", &|a| hot(a, 64));
    row("churn, 10,000 live (16..256 B)", &|a| {
        churn(a, 10_000, bench::small_size)
    });
    row("churn, 100,000 live (16..256 B)", &|a| {
        churn(a, 100_000, bench::small_size)
    });
    row("mixed 8..4096 B, 1,000 live", &|a| {
        churn(a, 1_000, bench::mixed_size)
    });
    row("page-sized blocks (4 KiB)", &|a| blocks(a, 0, 64));
    row("order-3 blocks (32 KiB)", &|a| blocks(a, 3, 16));

    let cache_hot = hot(&cache, 64);
    lockdep::set_mode(LockdepMode::On);
    let cache_hot_lockdep = hot(&cache, 64);
    let kmalloc_hot_lockdep = hot(&k, 64);
    lockdep::set_mode(LockdepMode::Off);

    // Several threads at once, each a CPU of its own for kreclaim.
    eprintln!("measuring alloc+free 64 B on 1 and 2 threads ...");
    let mt_peers: [&(dyn BenchAlloc + Sync); 2] = [&talc, &sys];
    let mt =
        |a: &(dyn BenchAlloc + Sync)| [1, 2].map(|n| bench::threaded_hot(a, 64, n, MT_OPS, ROUNDS));
    let mt_kreclaim = mt(&cache);
    let mt_peer_rates: Vec<[f64; 2]> = mt_peers.iter().map(|p| mt(*p)).collect();

    // Slab memory overhead for 64-byte objects.
    let c = KmemCache::create("overhead-64", 64, 8, SlabFlags::empty(), None).unwrap();
    let objs: Vec<_> = (0..100_000)
        .map(|_| c.alloc(kreclaim::mm::gfp::GFP_KERNEL).unwrap())
        .collect();
    let info = c.info();
    let slab_bytes = (info.num_slabs * info.pagesperslab * 4096) as f64;
    let obj_bytes = (objs.len() * 64) as f64;
    let overhead = (slab_bytes - obj_bytes) / obj_bytes * 100.0;
    let page_meta = (info.num_slabs * info.pagesperslab * 40) as f64;
    let overhead_with_memmap = (slab_bytes + page_meta - obj_bytes) / obj_bytes * 100.0;
    for o in objs {
        // SAFETY: each `o` came from `c` and `objs` is consumed here.
        unsafe { c.free(o) };
    }
    c.destroy().unwrap();

    eprintln!("running the word index (system, kreclaim) ...");
    let mut wi_sys = f64::INFINITY;
    let mut wi_k = f64::INFINITY;
    let (mut sum_sys, mut sum_k, mut fallbacks) = (0, 0, 0);
    for _ in 0..3 {
        let (t, s, _) = word_index("system");
        wi_sys = wi_sys.min(t);
        sum_sys = s;
        let (t, s, f) = word_index("kreclaim");
        wi_k = wi_k.min(t);
        sum_k = s;
        fallbacks = f;
    }

    println!(
        "kreclaim host benchmarks: ns per operation (best of {ROUNDS} rounds), and each peer's time \
         as a multiple of kreclaim's (>1x: kreclaim is faster)"
    );
    println!(
        "machine: {} CPUs, {}; kreclaim lockdep off, peers in their locked (global-allocator) form",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    println!();
    let names = [
        "talc",
        "linked_list_allocator",
        "buddy_system_allocator",
        "system",
    ];
    print!("| {:<34} | {:>10} |", "workload", "kreclaim");
    for n in names {
        print!(" {n:>24} |");
    }
    println!();
    print!("|{:-<36}|{:->12}|", "", "");
    for _ in names {
        print!("{:->26}|", "");
    }
    println!();
    for r in &rows {
        print!("| {:<34} | {:>10.1} |", r.name, r.kreclaim);
        for p in &r.peers {
            let cell = format!("{p:.1} ({:.2}x)", p / r.kreclaim);
            print!(" {cell:>24} |");
        }
        println!();
    }
    println!();
    println!(
        "kmem_cache (64 B) hot alloc+free: {cache_hot:.1} ns (lockdep on: {cache_hot_lockdep:.1} ns); kmalloc-64 with lockdep on: {kmalloc_hot_lockdep:.1} ns"
    );
    println!(
        "alloc+free 64 B, Mops/s of all threads together (1 thread / 2 threads, scaling): \
         kreclaim kmem_cache {:.1} / {:.1} ({:.2}x); talc behind a spinlock {:.1} / {:.1} ({:.2}x); \
         system {:.1} / {:.1} ({:.2}x)",
        mt_kreclaim[0] / 1e6,
        mt_kreclaim[1] / 1e6,
        mt_kreclaim[1] / mt_kreclaim[0],
        mt_peer_rates[0][0] / 1e6,
        mt_peer_rates[0][1] / 1e6,
        mt_peer_rates[0][1] / mt_peer_rates[0][0],
        mt_peer_rates[1][0] / 1e6,
        mt_peer_rates[1][1] / 1e6,
        mt_peer_rates[1][1] / mt_peer_rates[1][0],
    );
    println!(
        "slab memory overhead, 64-byte objects: {overhead:.2}% (slab pages vs object bytes; \
         {overhead_with_memmap:.2}% counting the 40-byte struct page of each slab page)"
    );
    println!(
        "word index (String/Vec/BTreeMap, #[global_allocator]): system {wi_sys:.1} ms, kreclaim \
         {wi_k:.1} ms ({:.2}x system's time); checksums {}; {fallbacks} allocations > 4 MiB went to the system allocator",
        wi_k / wi_sys,
        if sum_sys == sum_k { "equal" } else { "DIFFER" }
    );
    println!();
    let churn10k = &rows[1];
    let goal = |ok: bool| if ok { "met" } else { "NOT MET" };
    println!("goals:");
    println!(
        "  kmem_cache hot alloc+free <= 20 ns: {cache_hot:.1} ns -> {}",
        goal(cache_hot <= 20.0)
    );
    println!(
        "  >= 2x faster than talc on small-object churn (10,000 live): {:.2}x -> {}",
        churn10k.peers[0] / churn10k.kreclaim,
        goal(churn10k.peers[0] / churn10k.kreclaim >= 2.0)
    );
    println!(
        "  >= 50x faster than linked_list_allocator at 10,000 live objects: {:.1}x -> {}",
        churn10k.peers[1] / churn10k.kreclaim,
        goal(churn10k.peers[1] / churn10k.kreclaim >= 50.0)
    );
    println!(
        "  slab memory overhead < 5% for 64-byte objects: {overhead:.2}% -> {}",
        goal(overhead < 5.0)
    );
    // Issue 11's goals (per-CPU fast paths).
    let hot64 = &rows[0];
    let (vs_sys, vs_talc) = (
        hot64.peers[3] / hot64.kreclaim,
        hot64.peers[0] / hot64.kreclaim,
    );
    let churn_talc = churn10k.peers[0] / churn10k.kreclaim;
    let issue11 = [
        (
            "hot alloc+free 64 B no slower than the system allocator",
            vs_sys,
            1.0,
        ),
        ("hot alloc+free 64 B >= 1.5x faster than talc", vs_talc, 1.5),
        (
            "churn, 10,000 live >= 1.5x faster than talc",
            churn_talc,
            1.5,
        ),
    ];
    let scaling = mt_kreclaim[1] / mt_kreclaim[0];
    println!(
        "  kreclaim kmem_cache at 2 threads >= 1.7x its 1-thread throughput: {scaling:.2}x -> {}",
        goal(scaling >= 1.7)
    );
    for (name, ratio, want) in issue11 {
        println!("  {name}: {ratio:.2}x -> {}", goal(ratio >= want));
    }
    if args.iter().any(|a| a == "--json") {
        // One JSON object per figure, for programs (`cargo host-bench -- --json`).
        for r in &rows {
            let peers: Vec<String> = names
                .iter()
                .zip(&r.peers)
                .map(|(n, p)| format!("\"{n}\":{p:.1}"))
                .collect();
            println!(
                "{{\"kind\":\"bench\",\"name\":\"{}\",\"kreclaim_ns\":{:.1},\"peers_ns\":{{{}}}}}",
                r.name,
                r.kreclaim,
                peers.join(",")
            );
        }
        let scaling_goal = [(
            "kreclaim kmem_cache at 2 threads >= 1.7x its 1-thread throughput",
            scaling,
            1.7,
        )];
        for (name, ratio, want) in issue11.iter().chain(&scaling_goal) {
            println!(
                "{{\"kind\":\"goal\",\"name\":\"{name}\",\"ratio\":{ratio:.2},\"want\":{want:.1},\"met\":{}}}",
                ratio >= want
            );
        }
    }
}
