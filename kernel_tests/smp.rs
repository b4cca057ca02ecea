//! SMP bring-up, booted with 4 CPUs: every CPU comes online, reads its own
//! number through its GS base, takes LAPIC timer ticks and has guarded
//! stacks; a CPU that never answers is reported, not waited for; the MADT
//! parser refuses bad tables. Then the scheduler on every CPU: placement,
//! binding, cross-CPU wake-ups, stealing, and torture of the locks, the
//! slab allocator (cross-CPU frees) and the page allocator with one task
//! per CPU; lockdep across CPUs.

#![no_std]
#![no_main]

extern crate alloc;

use kreclaim::mm::inline_name::InlineName;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use kreclaim::arch::x86_64::acpi::{self, AcpiError};
use kreclaim::arch::x86_64::interrupts::{FaultReport, set_fault_hook};
use kreclaim::arch::x86_64::smp::{self, ApStartError};
use kreclaim::arch::x86_64::{gdt, paging, stacks};
use kreclaim::harness::{OrFail, TestResult, wait_for};
use kreclaim::lock_class;
use kreclaim::mm::page::{PhysAddr, page_address};
use kreclaim::mm::page_alloc::{
    alloc_pages, drain_all_pages, free_pages, nr_free_pages, nr_pcp_pages, pcp_count,
};
use kreclaim::mm::slab::{KmemCache, SlabFlags};
use kreclaim::prelude::GFP_KERNEL;
use kreclaim::sync::lockdep::{self, ReportKind};
use kreclaim::sync::{Completion, Mutex, RwSemaphore, SpinLock};
use kreclaim::task::{self, TaskState};
use kreclaim::{kassert, kassert_eq};

// The runner reads this and boots the kernel with `-smp 4`.
kreclaim::qemu_cpus!(4);
const CPUS: usize = 4;

kreclaim::kernel_tests!(
    every_cpu_comes_online,
    boot_cpu_is_cpu_0_through_gs,
    each_cpu_reads_its_own_number_through_gs,
    every_ap_timer_ticks,
    ap_stacks_have_guard_pages,
    each_cpu_has_its_own_gdt_and_tss_and_shares_the_idt,
    cpu_that_never_answers_is_reported_not_waited_for,
    madt_parser_reads_cpus_and_refuses_bad_tables,
    acpi_walk_finds_the_madt_and_refuses_bad_roots,
    code_run_on_an_ap_sees_that_ap_through_gs,
    an_ap_allocates_from_its_own_sheaves,
    bench_smp_stops_every_cpus_loop_and_leaves_no_object_behind,
    every_ap_enters_the_scheduler,
    unbound_tasks_run_on_every_cpu,
    spawn_on_binds_a_task_to_its_cpu,
    wake_up_crosses_cpus_with_an_ipi,
    idle_cpus_steal_from_a_busy_cpu,
    lock_torture_on_every_cpu,
    slab_torture_with_cross_cpu_frees,
    shrink_drains_every_cpus_sheaves,
    reclaims_flush_drains_every_cpus_sheaves,
    destroy_after_cross_cpu_frees_waits_for_a_held_sheaf_lock,
    destroy_with_live_objects_reports_the_exact_count_and_name,
    prefill_fills_the_named_cpus_sheaf_and_refuses_a_held_one,
    remote_drains_of_cpus_busy_on_their_fast_paths_lose_nothing,
    a_drain_waits_for_the_owners_flag_held_by_a_preemptible_task,
    a_task_woken_while_switching_out_runs_nowhere_else_until_saved,
    idle_cpus_do_not_steal_a_task_still_switching_out,
    join_returns_only_after_the_tasks_cpu_freed_its_stack,
    a_freed_stack_slot_waits_for_every_cpus_tlb_flush,
    page_allocator_torture_on_every_cpu,
    remote_drains_and_the_owners_fast_path_never_share_a_pcp_list,
    a_preloaded_block_goes_to_its_own_cpus_next_allocation_only,
    lockdep_finds_an_abba_across_cpus,
    // Last: it leaves CPU 3 halted for good.
    ap_stack_overflow_hits_its_guard_page_and_double_faults_on_its_ist,
);

fn every_cpu_comes_online() -> TestResult {
    kassert_eq!(
        kreclaim::platform::nr_cpus(),
        CPUS,
        "qemu_cpus!(4) asks for 4 CPUs (a -smp in KRECLAIM_QEMU_ARGS overrides it)"
    );
    // Already at the first case: start_kernel waits for every AP to enter
    // its scheduler before the main function runs (as Linux's smp_init).
    kassert_eq!(
        task::online_cpus(),
        CPUS,
        "CPUs running their scheduler when the main function starts"
    );
    let mut apic_ids = Vec::new();
    for n in 0..CPUS {
        let c = smp::cpu(n).unwrap();
        kassert!(c.online(), "CPU {n} is not online");
        kassert!(
            !apic_ids.contains(&c.apic_id()),
            "CPU {n}: APIC id {} twice",
            c.apic_id()
        );
        apic_ids.push(c.apic_id());
    }
    kassert!(!smp::cpu(CPUS).unwrap().online(), "a 5th CPU is online");
    Ok(())
}

fn boot_cpu_is_cpu_0_through_gs() -> TestResult {
    kassert_eq!(smp::cpu_id(), 0);
    kassert_eq!(kreclaim::platform::cpu_id(), 0);
    kassert_eq!(smp::this_cpu().cpu_id(), 0);
    // SAFETY: reading IA32_GS_BASE has no side effects.
    let gs = unsafe { x86_64::registers::model_specific::Msr::new(0xC000_0101).read() };
    kassert_eq!(
        gs,
        smp::cpu(0).unwrap() as *const _ as u64,
        "GS base is not CPU 0's data"
    );
    Ok(())
}

fn each_cpu_reads_its_own_number_through_gs() -> TestResult {
    for n in 0..CPUS {
        let c = smp::cpu(n).unwrap();
        kassert_eq!(c.gs_cpu_id(), n, "CPU {n} read another number through GS");
    }
    Ok(())
}

fn every_ap_timer_ticks() -> TestResult {
    let start: Vec<u64> = (0..CPUS).map(|n| smp::cpu(n).unwrap().ticks()).collect();
    for (n, &t0) in start.iter().enumerate().skip(1) {
        let c = smp::cpu(n).unwrap();
        wait_for("an AP's LAPIC timer to tick 3 more times", || {
            c.ticks() >= t0 + 3
        })?;
    }
    Ok(())
}

fn ap_stacks_have_guard_pages() -> TestResult {
    kassert!(
        smp::ap_stacks(0).is_none(),
        "the boot CPU has static stacks"
    );
    for n in 1..CPUS {
        let all = smp::ap_stacks(n).or_fail("an online AP's stacks")?;
        for (i, &(guard, bottom, top)) in all.iter().enumerate() {
            kassert_eq!(guard + 4096, bottom);
            kassert!(
                paging::translate(guard).is_none(),
                "CPU {n} stack {i}: guard page mapped"
            );
            kassert!(
                paging::translate(bottom).is_some(),
                "CPU {n} stack {i}: bottom unmapped"
            );
            kassert!(
                paging::translate(top - 1).is_some(),
                "CPU {n} stack {i}: top unmapped"
            );
            let owner = stacks::guard_page_owner(guard + 8);
            let want = if i == 0 { "kernel" } else { "IST" };
            let want = alloc::format!("CPU {n} {want}");
            kassert!(
                owner.as_ref().is_some_and(|o| *o == want.as_str()),
                "guard owner {owner:?}, want {want}"
            );
        }
        let (_, bottom, top) = all[0];
        let rsp = smp::cpu(n).unwrap().entry_rsp() as u64;
        kassert!(
            rsp > bottom && rsp <= top,
            "CPU {n} entered Rust with RSP {rsp:#x}, outside its stack [{bottom:#x}, {top:#x})"
        );
    }
    Ok(())
}

fn each_cpu_has_its_own_gdt_and_tss_and_shares_the_idt() -> TestResult {
    let (gdt0, idt0) = smp::cpu(0).unwrap().descriptor_tables();
    kassert!(gdt0 != 0 && idt0 != 0);
    let mut gdts = alloc::vec![gdt0];
    for n in 1..CPUS {
        let (gdt, idt) = smp::cpu(n).unwrap().descriptor_tables();
        kassert!(
            !gdts.contains(&gdt),
            "CPU {n} loaded another CPU's GDT at {gdt:#x}"
        );
        gdts.push(gdt);
        kassert_eq!(idt, idt0, "CPU {n} loaded another IDT");
        let tss = gdt::tss(n).or_fail("the AP's TSS")?;
        let ist = smp::ap_stacks(n).or_fail("the AP's stacks")?;
        for (slot, stack) in [gdt::DOUBLE_FAULT_IST, gdt::NMI_IST, gdt::MCE_IST]
            .into_iter()
            .zip(1..)
        {
            kassert_eq!(
                tss.interrupt_stack_table[slot as usize].as_u64(),
                ist[stack].2,
                "CPU {n}: IST slot {slot} is not its own stack"
            );
        }
    }
    Ok(())
}

fn cpu_that_never_answers_is_reported_not_waited_for() -> TestResult {
    const ABSENT: u32 = 0xEE;
    let ticks = smp::cpu(1).unwrap().ticks();
    match smp::probe_cpu(ABSENT, 200_000_000) {
        Err(e @ ApStartError::NotResponding { apic_id, .. }) => {
            kassert_eq!(apic_id, ABSENT);
            let text = alloc::format!("{e}");
            kassert!(
                text.contains("APIC id 238"),
                "the report does not name the CPU: {text}"
            );
        }
        other => kassert!(false, "probe of an absent CPU gave {other:?}"),
    }
    // An online CPU is refused by name, not reset.
    let online = smp::cpu(2).unwrap().apic_id();
    kassert_eq!(
        smp::probe_cpu(online, 200_000_000),
        Err(ApStartError::Online { apic_id: online })
    );
    // The others are undisturbed.
    kassert_eq!(kreclaim::platform::nr_cpus(), CPUS);
    let c = smp::cpu(1).unwrap();
    wait_for("CPU 1 to keep ticking", || c.ticks() > ticks)?;
    Ok(())
}

/// A MADT with a LAPIC address and the given entries, checksum fixed.
fn madt(entries: &[&[u8]]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(b"APIC");
    t.extend_from_slice(&[0; 4]); // length, below
    t.extend_from_slice(&[3, 0]); // revision, checksum
    t.extend_from_slice(&[0; 26]); // OEM ids, revisions
    t.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes()); // PC-AT compatible
    for e in entries {
        t.extend_from_slice(e);
    }
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    let sum = t.iter().fold(0u8, |s, &x| s.wrapping_add(x));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

fn madt_parser_reads_cpus_and_refuses_bad_tables() -> TestResult {
    let lapic = |id: u8, flags: u32| {
        let f = flags.to_le_bytes();
        [0u8, 8, id, id, f[0], f[1], f[2], f[3]]
    };
    let (a, b, c) = (lapic(0, 1), lapic(1, 1), lapic(2, 0));
    let x2 = [9u8, 16, 0, 0, 0x34, 0x12, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0];
    let ioapic = [1u8, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0];
    let t = madt(&[&a, &ioapic, &b, &c, &x2]);
    let m = acpi::parse_madt(&t)
        .map_err(|e| kreclaim::harness::TestFailure::new(alloc::format!("{e}")))?;
    kassert_eq!(m.lapic_base, 0xFEE0_0000);
    let got: Vec<(u32, bool)> = m.cpus().iter().map(|c| (c.apic_id, c.enabled)).collect();
    kassert_eq!(
        got,
        alloc::vec![(0, true), (1, true), (2, false), (0x1234, true)]
    );

    let mut bad = t.clone();
    bad[40] ^= 1;
    kassert_eq!(
        acpi::parse_madt(&bad).err(),
        Some(AcpiError::BadChecksum("APIC"))
    );
    // An entry of length 0 would loop forever; one running past the end reads past the table.
    let zero = madt(&[&a, &[0x7Fu8, 0, 1, 1, 1, 0, 0, 0]]);
    kassert_eq!(
        acpi::parse_madt(&zero).err(),
        Some(AcpiError::Truncated("APIC"))
    );
    let long = madt(&[&a, &[0u8, 40, 1, 1, 1, 0, 0, 0]]);
    kassert_eq!(
        acpi::parse_madt(&long).err(),
        Some(AcpiError::Truncated("APIC"))
    );
    let short = madt(&[&[9u8, 8, 0, 0, 1, 0, 0, 0]]);
    kassert_eq!(
        acpi::parse_madt(&short).err(),
        Some(AcpiError::Truncated("APIC"))
    );
    let mut cut = t.clone();
    cut.truncate(40);
    kassert!(
        acpi::parse_madt(&cut).is_err(),
        "a table shorter than its length field parsed"
    );
    let mut sig = t;
    sig[0] = b'X';
    kassert_eq!(
        acpi::parse_madt(&sig).err(),
        Some(AcpiError::BadSignature("APIC"))
    );
    Ok(())
}

/// Fake physical memory for the ACPI walk: `FAKE_BASE..` maps to a leaked buffer.
const FAKE_BASE: u64 = 0x1000_0000;
static FAKE: AtomicUsize = AtomicUsize::new(0);
static FAKE_LEN: AtomicUsize = AtomicUsize::new(0);

fn fake_read(pa: u64, len: usize) -> Option<&'static [u8]> {
    let (p, n) = (FAKE.load(Ordering::SeqCst), FAKE_LEN.load(Ordering::SeqCst));
    let off = usize::try_from(pa.checked_sub(FAKE_BASE)?).ok()?;
    if p == 0 || off.checked_add(len)? > n {
        return None;
    }
    // SAFETY: `p..p + n` is a leaked buffer that is never freed or written again.
    Some(unsafe { &core::slice::from_raw_parts(p as *const u8, n)[off..off + len] })
}

fn set_fake(mem: Vec<u8>) {
    let mem = mem.leak();
    FAKE_LEN.store(mem.len(), Ordering::SeqCst);
    FAKE.store(mem.as_ptr() as usize, Ordering::SeqCst);
}

fn fix_checksum(b: &mut [u8], at: usize) {
    b[at] = 0;
    let sum = b.iter().fold(0u8, |s, &x| s.wrapping_add(x));
    b[at] = 0u8.wrapping_sub(sum);
}

/// RSDP (revision 2) at FAKE_BASE, XSDT at +0x100 listing `xsdt_entries`,
/// a MADT with two enabled CPUs at +0x200.
fn fake_acpi(xsdt_entries: &[u64], xsdt_len: Option<u32>) -> Vec<u8> {
    let mut mem = alloc::vec![0u8; 0x400];
    let rsdp = &mut mem[..36];
    rsdp[..8].copy_from_slice(b"RSD PTR ");
    rsdp[15] = 2;
    rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());
    rsdp[24..32].copy_from_slice(&(FAKE_BASE + 0x100).to_le_bytes());
    fix_checksum(&mut rsdp[..20], 8);
    fix_checksum(rsdp, 32);
    let len = 36 + 8 * xsdt_entries.len();
    let xsdt = &mut mem[0x100..0x100 + len];
    xsdt[..4].copy_from_slice(b"XSDT");
    xsdt[4..8].copy_from_slice(&xsdt_len.unwrap_or(len as u32).to_le_bytes());
    for (i, e) in xsdt_entries.iter().enumerate() {
        xsdt[36 + 8 * i..44 + 8 * i].copy_from_slice(&e.to_le_bytes());
    }
    fix_checksum(xsdt, 9);
    let t = madt(&[&[0u8, 8, 0, 0, 1, 0, 0, 0], &[0u8, 8, 1, 5, 1, 0, 0, 0]]);
    mem[0x200..0x200 + t.len()].copy_from_slice(&t);
    mem
}

fn acpi_walk_finds_the_madt_and_refuses_bad_roots() -> TestResult {
    let madt_pa = FAKE_BASE + 0x200;
    // An unreachable entry first: skipped, the MADT after it is found.
    set_fake(fake_acpi(&[0xdead_0000, madt_pa], None));
    let m = acpi::read_madt(fake_read, FAKE_BASE)
        .map_err(|e| kreclaim::harness::TestFailure::new(alloc::format!("{e}")))?;
    let ids: Vec<u32> = m.cpus().iter().map(|c| c.apic_id).collect();
    kassert_eq!(ids, alloc::vec![0, 5]);

    set_fake(fake_acpi(&[], None));
    kassert_eq!(
        acpi::read_madt(fake_read, FAKE_BASE).err(),
        Some(AcpiError::NoMadt)
    );
    set_fake(fake_acpi(&[madt_pa], Some(0x7fff_ffff)));
    kassert_eq!(
        acpi::read_madt(fake_read, FAKE_BASE).err(),
        Some(AcpiError::TooLarge("XSDT"))
    );
    let mut bad = fake_acpi(&[madt_pa], None);
    bad[3] ^= 0x20;
    set_fake(bad);
    kassert_eq!(
        acpi::read_madt(fake_read, FAKE_BASE).err(),
        Some(AcpiError::BadSignature("RSDP"))
    );
    let mut bad = fake_acpi(&[madt_pa], None);
    bad[9] ^= 1; // an OEM id byte: the RSDP checksum no longer adds up
    set_fake(bad);
    kassert_eq!(
        acpi::read_madt(fake_read, FAKE_BASE).err(),
        Some(AcpiError::BadChecksum("RSDP"))
    );
    kassert_eq!(
        acpi::read_madt(fake_read, FAKE_BASE + 0x300).err(),
        Some(AcpiError::BadSignature("RSDP"))
    );
    Ok(())
}

static SEEN_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

fn record_cpu_id() {
    SEEN_CPU.store(smp::cpu_id(), Ordering::SeqCst);
}

fn code_run_on_an_ap_sees_that_ap_through_gs() -> TestResult {
    kassert!(
        !smp::call_on_ap(0, record_cpu_id),
        "call_on_ap took the boot CPU"
    );
    kassert!(
        !smp::call_on_ap(CPUS, record_cpu_id),
        "call_on_ap took an absent CPU"
    );
    for n in 1..CPUS {
        SEEN_CPU.store(usize::MAX, Ordering::SeqCst);
        kassert!(
            smp::call_on_ap(n, record_cpu_id),
            "CPU {n} refused the call"
        );
        wait_for("the AP to run the call", || {
            SEEN_CPU.load(Ordering::SeqCst) != usize::MAX
        })?;
        kassert_eq!(
            SEEN_CPU.load(Ordering::SeqCst),
            n,
            "code on CPU {n} read another id"
        );
    }
    Ok(())
}

/// The cache the AP case below allocates from, and what the AP got.
static AP_CACHE: AtomicUsize = AtomicUsize::new(0);
static AP_OBJ: AtomicUsize = AtomicUsize::new(0);
/// 0 idle, 1 allocate, 2 free; the AP sets 3 when done (4: it failed).
static AP_STEP: AtomicUsize = AtomicUsize::new(0);

fn ap_slab_step() {
    // SAFETY: the test keeps the cache alive until the AP reported done.
    let c = unsafe { &*(AP_CACHE.load(Ordering::SeqCst) as *const kreclaim::mm::slab::KmemCache) };
    let gfp = kreclaim::mm::gfp::Gfp::GFP_NOWAIT;
    let r = match AP_STEP.load(Ordering::SeqCst) {
        1 => match c.alloc(gfp) {
            Ok(p) => {
                AP_OBJ.store(p.as_ptr() as usize, Ordering::SeqCst);
                3
            }
            Err(_) => 4,
        },
        2 => {
            let p = AP_OBJ.load(Ordering::SeqCst) as *mut u8;
            // SAFETY: allocated from `c` by step 1, not used since.
            unsafe { c.free(core::ptr::NonNull::new_unchecked(p)) };
            3
        }
        _ => 4,
    };
    AP_STEP.store(r, Ordering::SeqCst);
}

fn run_on_ap(cpu: usize, step: usize) -> TestResult {
    AP_STEP.store(step, Ordering::SeqCst);
    kassert!(
        smp::call_on_ap(cpu, ap_slab_step),
        "CPU {cpu} refused the call"
    );
    wait_for("the AP's slab step", || AP_STEP.load(Ordering::SeqCst) >= 3)?;
    kassert_eq!(
        AP_STEP.load(Ordering::SeqCst),
        3,
        "the AP's allocation failed"
    );
    Ok(())
}

fn an_ap_allocates_from_its_own_sheaves() -> TestResult {
    // Sheaves are per CPU by the platform's CPU number (the GS base), not
    // the scheduler's CPU: code on an AP pops and pushes the AP's own main
    // sheaf. (On the fast path only: lockdep off, GFP_NOWAIT, its sheaves
    // filled beforehand, as bench=smp does; see call_on_ap.)
    use kreclaim::mm::slab::{KmemCache, SlabFlags, prefill_sheaves};
    use kreclaim::sync::lockdep::{self, LockdepMode};
    let c = KmemCache::create("t-ap-sheaf", 64, 0, SlabFlags::empty(), None)
        .or_fail("kmem_cache_create")?;
    let saved = lockdep::mode();
    lockdep::set_mode(LockdepMode::Off);
    let r = (|| -> TestResult {
        kassert!(
            prefill_sheaves(&c, 1),
            "CPU 1's sheaves could not be filled"
        );
        let full = c.info_unflushed();
        kassert!(full.sheaf_objs > 0 && full.active_objs == 0, "{full:?}");
        AP_CACHE.store(&c as *const KmemCache as usize, Ordering::SeqCst);
        run_on_ap(1, 1)?;
        let after = c.info_unflushed();
        // Had the AP used CPU 0's sheaves (empty), its allocation would
        // have filled those from the slabs: more objects in sheaves.
        kassert_eq!(
            after.sheaf_objs,
            full.sheaf_objs - 1,
            "not from CPU 1's sheaf"
        );
        kassert_eq!(after.active_objs, 1);
        run_on_ap(1, 2)?;
        let back = c.info_unflushed();
        kassert_eq!(
            back.sheaf_objs,
            full.sheaf_objs,
            "not pushed onto CPU 1's sheaf"
        );
        kassert_eq!(back.active_objs, 0);
        Ok(())
    })();
    lockdep::set_mode(saved);
    r?;
    // Destroy flushes every CPU's sheaves: nothing is left live.
    kassert_eq!(c.info().active_objs, 0);
    c.validate().or_fail("validate")?;
    c.destroy().or_fail("destroy")?;
    Ok(())
}

// ---------------------------------------------------------------------
// The scheduler on every CPU.
// ---------------------------------------------------------------------

/// Waits for a task, at most 60 s (a hang is a failure, not a timing check).
/// `bench=smp` on all 4 CPUs (rows for 1, 2 and 4 working CPUs): every
/// round ends (the boot CPU's stop reaches each AP's loop, which runs until
/// told), and no AP is still allocating when the benchmark's cache is
/// destroyed: the destroy finds no live object and no drain gives up.
/// No round is left out (each CPU started, stopped and allocated). Figures
/// are printed, never checked.
fn bench_smp_stops_every_cpus_loop_and_leaves_no_object_behind() -> TestResult {
    use kreclaim::mm::slab::{SlabBug, reports, sheaf_drain_giveups};
    let live_before = reports()
        .iter()
        .filter(|r| r.bug == SlabBug::LiveObjectsAtDestroy)
        .count();
    let giveups = sheaf_drain_giveups();
    kreclaim::bench::smp(kreclaim::bench::Format::Text).or_fail("bench=smp")?;
    kassert_eq!(kreclaim::bench::smp_rounds_left_out(), 0, "rounds left out");
    let live_after = reports()
        .iter()
        .filter(|r| r.bug == SlabBug::LiveObjectsAtDestroy)
        .count();
    kassert_eq!(live_after, live_before, "bench-smp-64 had live objects");
    kassert_eq!(sheaf_drain_giveups(), giveups);
    Ok(())
}

fn join(h: task::JoinHandle, what: &str) -> TestResult {
    kassert!(
        h.join_timeout(Duration::from_secs(60)).is_ok(),
        "{what} did not finish"
    );
    Ok(())
}

fn here() -> usize {
    kreclaim::platform::without_interrupts(kreclaim::platform::cpu_id)
}

fn every_ap_enters_the_scheduler() -> TestResult {
    wait_for("every AP to run its idle task", || {
        task::online_cpus() == CPUS
    })?;
    for n in 0..CPUS {
        kassert!(task::cpu_online(n), "CPU {n} does not schedule");
    }
    kassert!(!task::cpu_online(CPUS));
    Ok(())
}

/// Unbound tasks that keep yielding until each of them has seen every CPU
/// between them: only placement on idle CPUs and stealing get them there.
fn unbound_tasks_run_on_every_cpu() -> TestResult {
    static SEEN: AtomicU32 = AtomicU32::new(0);
    static STOP: AtomicBool = AtomicBool::new(false);
    SEEN.store(0, Ordering::SeqCst);
    STOP.store(false, Ordering::SeqCst);
    let all = (1u32 << CPUS) - 1;
    let mut hs = Vec::new();
    for _ in 0..2 * CPUS {
        hs.push(
            task::spawn("spreader", move || {
                while SEEN.load(Ordering::SeqCst) != all && !STOP.load(Ordering::SeqCst) {
                    SEEN.fetch_or(1 << here(), Ordering::SeqCst);
                    for _ in 0..10_000 {
                        core::hint::spin_loop();
                    }
                    task::yield_now();
                }
            })
            .or_fail("spawn")?,
        );
    }
    let r = wait_for("tasks on every CPU", || SEEN.load(Ordering::SeqCst) == all);
    STOP.store(true, Ordering::SeqCst);
    let mut ran = 0;
    for h in hs {
        let t = h.task().clone();
        join(h, "a spreader")?;
        ran |= t.cpus_ran();
    }
    r?;
    kassert_eq!(ran, all, "the tasks ran on CPUs {ran:#b}");
    for n in 0..CPUS {
        kassert!(
            task::cpu_task_switches(n) > 0,
            "CPU {n} never switched to a task"
        );
    }
    Ok(())
}

/// A bound task yields many times and only ever runs on its CPU, while the
/// other CPUs idle and would steal an unbound one.
fn spawn_on_binds_a_task_to_its_cpu() -> TestResult {
    for cpu in 0..CPUS {
        let wrong = Arc::new(AtomicUsize::new(0));
        let w = wrong.clone();
        let h = task::spawn_on(cpu, "bound", move || {
            for _ in 0..200 {
                if here() != cpu {
                    w.fetch_add(1, Ordering::SeqCst);
                }
                task::yield_now();
            }
        })
        .or_fail("spawn_on")?;
        let t = h.task().clone();
        join(h, "a bound task")?;
        kassert_eq!(wrong.load(Ordering::SeqCst), 0, "left CPU {cpu}");
        kassert_eq!(t.cpus_ran(), 1 << cpu);
        kassert_eq!(t.affinity(), Some(cpu));
    }
    kassert!(task::spawn_on(CPUS, "nowhere", || {}).is_err());
    Ok(())
}

/// A task bound to an AP sleeps on a completion; the boot CPU completes
/// it: the wake-up queues it on its AP, with a reschedule IPI, and it runs
/// there.
fn wake_up_crosses_cpus_with_an_ipi() -> TestResult {
    for cpu in 1..CPUS {
        let c = Arc::new(Completion::new());
        let woke_on = Arc::new(AtomicUsize::new(usize::MAX));
        let (c2, w) = (c.clone(), woke_on.clone());
        let h = task::spawn_on(cpu, "sleeper", move || {
            c2.wait();
            w.store(here(), Ordering::SeqCst);
        })
        .or_fail("spawn_on")?;
        wait_for("the sleeper to block", || {
            h.task().state() == TaskState::Blocked
        })?;
        let ipis = task::resched_ipis();
        c.complete();
        kassert!(
            task::resched_ipis() > ipis,
            "no reschedule IPI for the wake-up"
        );
        join(h, "the sleeper")?;
        kassert_eq!(woke_on.load(Ordering::SeqCst), cpu);
    }
    Ok(())
}

/// CPU 1 spins with preemption disabled while unbound tasks wait in its run
/// queue: only another CPU stealing them lets them run.
fn idle_cpus_steal_from_a_busy_cpu() -> TestResult {
    const N: usize = 6;
    static DONE: AtomicUsize = AtomicUsize::new(0);
    static ON_1: AtomicUsize = AtomicUsize::new(0);
    DONE.store(0, Ordering::SeqCst);
    ON_1.store(0, Ordering::SeqCst);
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let steals0: u64 = (0..CPUS).map(task::cpu_steals).sum();
    let hog = task::spawn_on(1, "cpu1-hog", move || {
        let _p = task::PreemptGuard::new();
        s.store(true, Ordering::SeqCst);
        let t0 = kreclaim::time::now_ns();
        // Bounded, so that a kernel without stealing fails instead of hanging.
        while DONE.load(Ordering::SeqCst) < N && kreclaim::time::now_ns() - t0 < 30_000_000_000 {
            core::hint::spin_loop();
        }
    })
    .or_fail("spawn_on")?;
    wait_for("the hog to spin", || started.load(Ordering::SeqCst))?;
    let mut hs = Vec::new();
    for _ in 0..N {
        hs.push(
            task::spawn_queued_on(1, "stealable", || {
                if here() == 1 {
                    ON_1.fetch_add(1, Ordering::SeqCst);
                }
                DONE.fetch_add(1, Ordering::SeqCst);
            })
            .or_fail("spawn_queued_on")?,
        );
    }
    join(hog, "the hog")?;
    for h in hs {
        join(h, "a stealable task")?;
    }
    kassert_eq!(
        ON_1.load(Ordering::SeqCst),
        0,
        "a queued task ran on the busy CPU"
    );
    let steals: u64 = (0..CPUS).map(task::cpu_steals).sum();
    kassert!(steals >= steals0 + N as u64, "steals {steals0} -> {steals}");
    Ok(())
}

/// One task per CPU, all contending for a spinlock, a mutex and an rwsem
/// and completing a completion per round: the counters come out exact.
fn lock_torture_on_every_cpu() -> TestResult {
    const ITERS: u64 = 2000;
    static SPIN: SpinLock<u64> = SpinLock::new(0, lock_class!("smp_torture_spin"));
    static MUTEX: Mutex<u64> = Mutex::new(0, lock_class!("smp_torture_mutex"));
    static RW: RwSemaphore<(u64, u64)> = RwSemaphore::new((0, 0), lock_class!("smp_torture_rwsem"));
    static TORN: AtomicUsize = AtomicUsize::new(0);
    static PLAIN: AtomicU64 = AtomicU64::new(0);
    let done = Arc::new(Completion::new());
    let mut hs = Vec::new();
    for cpu in 0..CPUS {
        let done = done.clone();
        hs.push(
            task::spawn_on(cpu, "torture", move || {
                for i in 0..ITERS {
                    {
                        let mut s = SPIN.lock();
                        // A non-atomic read-modify-write under the lock.
                        let v = *s;
                        core::hint::spin_loop();
                        *s = v + 1;
                    }
                    {
                        let mut m = MUTEX.lock();
                        let v = *m;
                        if i.is_multiple_of(64) {
                            task::yield_now();
                        }
                        *m = v + 1;
                        let p = PLAIN.load(Ordering::Relaxed);
                        PLAIN.store(p + 1, Ordering::Relaxed);
                    }
                    if (i + cpu as u64).is_multiple_of(4) {
                        let mut w = RW.down_write();
                        w.0 += 1;
                        core::hint::spin_loop();
                        w.1 += 1;
                    } else {
                        let r = RW.down_read();
                        if r.0 != r.1 {
                            TORN.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                done.complete();
            })
            .or_fail("spawn_on")?,
        );
    }
    for _ in 0..CPUS {
        done.wait();
    }
    for h in hs {
        join(h, "a torture task")?;
    }
    let writes: u64 = (0..CPUS as u64)
        .map(|c| (0..ITERS).filter(|i| (i + c).is_multiple_of(4)).count() as u64)
        .sum();
    kassert_eq!(*SPIN.lock(), CPUS as u64 * ITERS);
    kassert_eq!(*MUTEX.lock(), CPUS as u64 * ITERS);
    kassert_eq!(PLAIN.load(Ordering::SeqCst), CPUS as u64 * ITERS);
    kassert_eq!(*RW.down_read(), (writes, writes));
    kassert_eq!(TORN.load(Ordering::SeqCst), 0, "a reader saw a torn write");
    kassert!(
        !done.is_done(),
        "every completion was consumed exactly once"
    );
    Ok(())
}

/// A queue of tagged objects from one CPU's task to the next one's.
type Mailbox = SpinLock<Vec<(usize, u64)>>;

/// One task per CPU allocates tagged objects and hands them to the next
/// CPU's task, which checks the tag and frees them: every free is a
/// cross-CPU free. Nothing is lost or handed out twice, and after each CPU
/// flushed its sheaves the cache's slabinfo is consistent and empty.
fn slab_torture_with_cross_cpu_frees() -> TestResult {
    const ROUNDS: u64 = 300;
    const BATCH: u64 = 16;
    static CACHE: spin::Once<KmemCache> = spin::Once::new();
    static BAD: AtomicUsize = AtomicUsize::new(0);
    static FREED: AtomicU64 = AtomicU64::new(0);
    static BOXES: [Mailbox; CPUS] =
        [const { SpinLock::new(Vec::new(), lock_class!("smp_mailbox")) }; CPUS];
    let cache = CACHE.call_once(|| {
        KmemCache::create("smp_torture", 64, 8, SlabFlags::empty(), None).expect("create")
    });
    for b in BOXES.iter() {
        b.lock()
            .try_reserve(4 * (ROUNDS * BATCH) as usize)
            .or_fail("reserve")?;
    }
    let mut hs = Vec::new();
    for cpu in 0..CPUS {
        hs.push(
            task::spawn_on(cpu, "slab-torture", move || {
                let cache = CACHE.get().unwrap();
                let to = &BOXES[(cpu + 1) % CPUS];
                let from = &BOXES[cpu];
                let mut seq = (cpu as u64) << 48;
                let free_some = || {
                    let batch: Vec<(usize, u64)> = {
                        let mut b = from.lock();
                        let n = b.len().min(BATCH as usize);
                        b.drain(..n).collect()
                    };
                    for (p, tag) in batch {
                        // SAFETY: a live object of CACHE, handed over
                        // through the mailbox and owned by us now.
                        unsafe {
                            if (p as *const u64).read() != tag {
                                BAD.fetch_add(1, Ordering::SeqCst);
                            }
                            cache.free(NonNull::new_unchecked(p as *mut u8));
                        }
                        FREED.fetch_add(1, Ordering::SeqCst);
                    }
                };
                for _ in 0..ROUNDS {
                    let mut out = [(0usize, 0u64); BATCH as usize];
                    for o in out.iter_mut() {
                        let Ok(p) = cache.alloc(GFP_KERNEL) else {
                            BAD.fetch_add(1, Ordering::SeqCst);
                            continue;
                        };
                        seq += 1;
                        // SAFETY: a fresh 64-byte object.
                        unsafe { (p.as_ptr() as *mut u64).write(seq) };
                        *o = (p.as_ptr() as usize, seq);
                    }
                    // Another task writing its tag into one of ours shows
                    // as a changed tag on the far side.
                    to.lock().extend(out.iter().filter(|o| o.0 != 0));
                    free_some();
                    task::yield_now();
                }
            })
            .or_fail("spawn_on")?,
        );
    }
    for h in hs {
        join(h, "a slab torture task")?;
    }
    // What is left in the mailboxes, freed from the boot CPU.
    for b in BOXES.iter() {
        for (p, tag) in b.lock().drain(..) {
            // SAFETY: as above.
            unsafe {
                if (p as *const u64).read() != tag {
                    BAD.fetch_add(1, Ordering::SeqCst);
                }
                cache.free(NonNull::new_unchecked(p as *mut u8));
            }
            FREED.fetch_add(1, Ordering::SeqCst);
        }
    }
    kassert_eq!(
        BAD.load(Ordering::SeqCst),
        0,
        "lost, failed or shared objects"
    );
    kassert_eq!(FREED.load(Ordering::SeqCst), CPUS as u64 * ROUNDS * BATCH);
    // Each CPU flushes its own sheaves (Linux's flush_all on every CPU).
    for cpu in 0..CPUS {
        join(
            task::spawn_on(cpu, "flush", || {
                CACHE.get().unwrap().flush_sheaves();
            })
            .or_fail("spawn_on")?,
            "a flush",
        )?;
    }
    let info = cache.info_unflushed();
    kassert_eq!(info.active_objs, 0, "objects lost: {info:?}");
    kassert_eq!(info.sheaf_objs, 0, "objects left in sheaves: {info:?}");
    kassert_eq!(
        info.active_slabs,
        info.partial_slabs + info.full_slabs,
        "{info:?}"
    );
    kassert_eq!(info.full_slabs, 0, "{info:?}");
    kassert!(cache.validate().is_ok());
    Ok(())
}

// ---------------------------------------------------------------------
// Draining every CPU's sheaves (shrink, reclaim's flush, destroy).
// ---------------------------------------------------------------------

/// A cache for the drain tests, reachable from tasks on other CPUs.
fn drain_cache(name: &'static str) -> Result<KmemCache, kreclaim::harness::TestFailure> {
    KmemCache::create(name, 64, 8, SlabFlags::empty(), None).or_fail("kmem_cache_create")
}

/// Runs `f` in a task bound to `cpu` and waits for it.
fn run_on(cpu: usize, f: impl FnOnce() + Send + 'static) -> TestResult {
    join(
        task::spawn_on(cpu, "drain-step", f).or_fail("spawn_on")?,
        "a task on an AP",
    )
}

/// On each AP, allocates `n` objects of `cache` and frees them there: they
/// end in that AP's sheaves (main, spare) and, past two sheaves' worth, in
/// the barn or back in the slabs. Returns the objects cached afterwards.
fn fill_ap_sheaves(cache: &KmemCache, n: usize) -> Result<usize, kreclaim::harness::TestFailure> {
    let addr = cache as *const KmemCache as usize;
    for cpu in 1..CPUS {
        run_on(cpu, move || {
            // SAFETY: the test keeps the cache alive until the task is joined.
            let c = unsafe { &*(addr as *const KmemCache) };
            let mut objs = Vec::with_capacity(n);
            for _ in 0..n {
                if let Ok(p) = c.alloc(GFP_KERNEL) {
                    objs.push(p);
                }
            }
            for p in objs {
                // SAFETY: allocated just above from `c`.
                unsafe { c.free(p) };
            }
        })?;
    }
    let info = cache.info_unflushed();
    kassert_eq!(info.active_objs, 0, "an AP's allocation failed: {info:?}");
    Ok(info.sheaf_objs)
}

/// `kmem_cache_shrink` from CPU 0 empties the sheaves CPUs 1..3 filled
/// (Linux's `flush_all` reaches every CPU) and frees every empty slab.
fn shrink_drains_every_cpus_sheaves() -> TestResult {
    let c = drain_cache("t-drain-shrink")?;
    let cached = fill_ap_sheaves(&c, 40)?;
    // 40 frees per AP fill its main sheaf (30) and put 10 in the spare.
    kassert!(cached >= 3 * 40, "the APs' sheaves hold {cached}");
    kassert_eq!(here(), 0);
    let pages = c.shrink();
    let info = c.info_unflushed();
    kassert_eq!(
        info.sheaf_objs,
        0,
        "objects left in the APs' sheaves: {info:?}"
    );
    kassert_eq!(info.active_objs, 0, "{info:?}");
    kassert_eq!(info.num_slabs, 0, "empty slabs kept after shrink: {info:?}");
    kassert!(pages > 0);
    c.validate().or_fail("validate")?;
    c.destroy().or_fail("destroy")?;
    Ok(())
}

/// Reclaim's last resort before OOM (`slab::flush_all_sheaves`, run here
/// from CPU 0) returns what every CPU's sheaves hold, not only CPU 0's.
fn reclaims_flush_drains_every_cpus_sheaves() -> TestResult {
    let c = drain_cache("t-drain-reclaim")?;
    let cached = fill_ap_sheaves(&c, 40)?;
    kassert!(cached >= 3 * 40, "the APs' sheaves hold {cached}");
    kreclaim::mm::slab::flush_all_sheaves();
    let info = c.info_unflushed();
    kassert_eq!(
        info.sheaf_objs,
        0,
        "objects left in the APs' sheaves: {info:?}"
    );
    kassert_eq!(info.barn_full, 0, "{info:?}");
    kassert_eq!(info.active_objs, 0, "{info:?}");
    kassert_eq!(info.full_slabs + info.partial_slabs, 0, "{info:?}");
    kassert!(info.empty_slabs <= c.min_partial(), "{info:?}");
    c.destroy().or_fail("destroy")?;
    Ok(())
}

/// Set by the holder task once it holds the sheaf lock, cleared as it lets
/// go.
static SHEAF_HELD: AtomicBool = AtomicBool::new(false);
/// Set by the test when the holder must let go whatever happened.
static SHEAF_RELEASE: AtomicBool = AtomicBool::new(false);

/// How [`hold_sheaf_lock`] takes a CPU's sheaves.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    /// As a context on another CPU would (`slab::with_sheaves_held`).
    Remote,
    /// As the owner's fast path does, by its own flag, on that CPU, past
    /// the pinned stretch with the task preemptible
    /// (`slab::with_own_sheaves_held`).
    Own,
}

/// The CPU whose own sheaf flag a [`Hold::Own`] holder took.
static SHEAF_HELD_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Starts a task on `cpu` that takes `cache`'s sheaf lock of that CPU (as
/// a fast path in progress would, `how`) and holds it until a drain has
/// found it held and waits ([`slab::sheaf_drain_waits`] moves), or until
/// the test sets [`SHEAF_RELEASE`]. Returns once the lock is held.
fn hold_sheaf_lock(
    cache: &KmemCache,
    cpu: usize,
    how: Hold,
) -> Result<task::JoinHandle, kreclaim::harness::TestFailure> {
    use kreclaim::mm::slab;
    SHEAF_HELD.store(false, Ordering::SeqCst);
    SHEAF_RELEASE.store(false, Ordering::SeqCst);
    SHEAF_HELD_CPU.store(usize::MAX, Ordering::SeqCst);
    let addr = cache as *const KmemCache as usize;
    let h = task::spawn_on(cpu, "sheaf-holder", move || {
        // SAFETY: the test keeps the cache alive while it holds the lock:
        // a drain of it waits for the lock before it frees anything.
        let c = unsafe { &*(addr as *const KmemCache) };
        let hold = |held_on: usize| {
            SHEAF_HELD_CPU.store(held_on, Ordering::SeqCst);
            let waits = slab::sheaf_drain_waits();
            SHEAF_HELD.store(true, Ordering::SeqCst);
            while slab::sheaf_drain_waits() == waits && !SHEAF_RELEASE.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            // Cleared just before the lock is: a drain that waited for the
            // lock returns only after this.
            SHEAF_HELD.store(false, Ordering::SeqCst);
        };
        let held = match how {
            Hold::Remote => slab::with_sheaves_held(c, cpu, || hold(cpu)),
            Hold::Own => slab::with_own_sheaves_held(c, hold),
        };
        if held.is_none() {
            SHEAF_RELEASE.store(true, Ordering::SeqCst); // the lock was taken
        }
    })
    .or_fail("spawn_on")?;
    wait_for("the holder to take the sheaf lock", || {
        SHEAF_HELD.load(Ordering::SeqCst) || SHEAF_RELEASE.load(Ordering::SeqCst)
    })?;
    kassert!(
        SHEAF_HELD.load(Ordering::SeqCst),
        "CPU {cpu}'s sheaf lock was not free"
    );
    kassert_eq!(
        SHEAF_HELD_CPU.load(Ordering::SeqCst),
        cpu,
        "the holder took another CPU's sheaves"
    );
    Ok(h)
}

/// Runs `drain` (on this CPU) while `holder` ([`hold_sheaf_lock`]) holds
/// CPU 2's sheaves, then lets the holder go, and checks that the drain
/// waited for it: it did not return while the sheaves were held, the
/// drain-wait count moved and no drain gave up. `what` names the drain in
/// the failures.
fn drain_while_cpu2_held<R>(
    holder: task::JoinHandle,
    what: &str,
    drain: impl FnOnce() -> R,
) -> Result<R, kreclaim::harness::TestFailure> {
    use kreclaim::mm::slab;
    let waits = slab::sheaf_drain_waits();
    let r = drain();
    let returned_while_held = SHEAF_HELD.load(Ordering::SeqCst);
    SHEAF_RELEASE.store(true, Ordering::SeqCst);
    join(holder, "the sheaf holder")?;
    kassert!(
        !returned_while_held,
        "{what} returned while CPU 2's sheaves were held: it skipped CPU 2 or emptied its \
         sheaves under the holder"
    );
    kassert!(slab::sheaf_drain_waits() > waits, "{what} never waited");
    kassert_eq!(slab::sheaf_drain_giveups(), 0);
    Ok(r)
}

/// CPUs 1..3 allocate and free on their fast paths without pause (each
/// object stamped with its CPU and a sequence number, checked before it is
/// freed, half of them freed by the next CPU) while CPU 0 drains their
/// sheaves over and over (`flush_sheaves`: each CPU's sheaves taken from
/// afar through their `remote` flag after a barrier IPI to that CPU, never
/// through the owner's flag). No object is lost or handed out twice, every
/// drain got every CPU (no give-up), and once all is freed and flushed the
/// cache is empty and consistent.
fn remote_drains_of_cpus_busy_on_their_fast_paths_lose_nothing() -> TestResult {
    use kreclaim::mm::slab;
    const ROUNDS: usize = 4_000;
    const BATCH: usize = 8;
    static CACHE: spin::Once<KmemCache> = spin::Once::new();
    static BAD: AtomicUsize = AtomicUsize::new(0);
    static DONE: AtomicUsize = AtomicUsize::new(0);
    static HANDOFF: [Mailbox; CPUS] =
        [const { SpinLock::new(Vec::new(), lock_class!("smp_drain_mailbox")) }; CPUS];
    let cache = CACHE.call_once(|| {
        KmemCache::create("smp_busy_drain", 64, 8, SlabFlags::empty(), None).expect("create")
    });
    for b in HANDOFF.iter() {
        b.lock().try_reserve(ROUNDS * BATCH).or_fail("reserve")?;
    }
    let saved = lockdep::mode();
    lockdep::set_mode(lockdep::LockdepMode::Off);
    let takes = slab::sheaf_remote_takes();
    let giveups = slab::sheaf_drain_giveups();
    let mut hs = Vec::new();
    for (cpu, mine) in HANDOFF.iter().enumerate().skip(1) {
        hs.push(
            task::spawn_on(cpu, "busy-fast-path", move || {
                let cache = CACHE.get().unwrap();
                let next = 1 + cpu % (CPUS - 1);
                let mut seq = (cpu as u64) << 48;
                let check = |p: usize, tag: u64| {
                    // SAFETY: a live object of CACHE owned by this task.
                    if unsafe { (p as *const u64).read() } != tag {
                        BAD.fetch_add(1, Ordering::SeqCst);
                    }
                };
                for round in 0..ROUNDS {
                    let mut out = [(0usize, 0u64); BATCH];
                    for o in out.iter_mut() {
                        let Ok(p) = cache.alloc(GFP_KERNEL) else {
                            BAD.fetch_add(1, Ordering::SeqCst);
                            continue;
                        };
                        seq += 1;
                        // SAFETY: a fresh 64-byte object.
                        unsafe { (p.as_ptr() as *mut u64).write(seq) };
                        *o = (p.as_ptr() as usize, seq);
                    }
                    for &(p, tag) in out.iter().filter(|o| o.0 != 0) {
                        check(p, tag);
                    }
                    // Half to the next busy CPU, half freed here.
                    let (give, keep) = out.split_at(BATCH / 2);
                    HANDOFF[next]
                        .lock()
                        .extend(give.iter().filter(|o| o.0 != 0));
                    for &(p, tag) in keep.iter().filter(|o| o.0 != 0) {
                        check(p, tag);
                        // SAFETY: allocated above from CACHE, freed once.
                        unsafe { cache.free(NonNull::new_unchecked(p as *mut u8)) };
                    }
                    if round % 4 == 0 {
                        let batch: Vec<(usize, u64)> = mine.lock().drain(..).collect();
                        for (p, tag) in batch {
                            check(p, tag);
                            // SAFETY: handed over whole by another CPU's task.
                            unsafe { cache.free(NonNull::new_unchecked(p as *mut u8)) };
                        }
                    }
                }
                DONE.fetch_add(1, Ordering::SeqCst);
            })
            .or_fail("spawn_on")?,
        );
    }
    let mut drains = 0usize;
    while DONE.load(Ordering::SeqCst) < CPUS - 1 {
        cache.flush_sheaves();
        drains += 1;
    }
    for h in hs {
        join(h, "a busy fast-path task")?;
    }
    lockdep::set_mode(saved);
    for b in HANDOFF.iter() {
        for (p, tag) in b.lock().drain(..) {
            // SAFETY: as above.
            unsafe {
                if (p as *const u64).read() != tag {
                    BAD.fetch_add(1, Ordering::SeqCst);
                }
                cache.free(NonNull::new_unchecked(p as *mut u8));
            }
        }
    }
    kassert_eq!(
        BAD.load(Ordering::SeqCst),
        0,
        "lost, failed or shared objects"
    );
    kassert!(drains > 0);
    kassert!(
        slab::sheaf_remote_takes() > takes,
        "the drains never took a CPU's sheaves through `remote`"
    );
    kassert_eq!(slab::sheaf_drain_giveups(), giveups);
    cache.flush_sheaves();
    let info = cache.info_unflushed();
    kassert_eq!(info.active_objs, 0, "objects lost: {info:?}");
    kassert_eq!(info.sheaf_objs, 0, "{info:?}");
    cache.validate().or_fail("validate")?;
    Ok(())
}

/// CPU 2's own sheaf flag is held as its fast path holds it past the
/// pinned stretch (taken by the owner, the task preemptible:
/// `slab::with_own_sheaves_held`); a drain from CPU 0 gets its barrier
/// answered (CPU 2 is not pinned) but then finds the flag set and waits,
/// instead of flushing the sheaves under the holder. Once the holder lets
/// go the drain empties them.
fn a_drain_waits_for_the_owners_flag_held_by_a_preemptible_task() -> TestResult {
    let c = drain_cache("t-drain-owner-flag")?;
    let cached = fill_ap_sheaves(&c, 20)?;
    kassert!(cached >= 3 * 20, "the APs' sheaves hold {cached}");
    let holder = hold_sheaf_lock(&c, 2, Hold::Own)?;
    drain_while_cpu2_held(holder, "the drain", || c.flush_sheaves())?;
    let info = c.info_unflushed();
    kassert_eq!(info.sheaf_objs, 0, "{info:?}");
    kassert_eq!(info.active_objs, 0, "{info:?}");
    c.destroy().or_fail("destroy")?;
    Ok(())
}

/// Objects allocated on CPU 0 and freed on CPUs 1..3 sit in those CPUs'
/// sheaves; while CPU 2 holds its sheaf lock (a fast path in progress),
/// destroy from CPU 0 waits for it instead of skipping CPU 2, so it finds
/// no object remaining. (Skipping CPU 2, the old behaviour, counted its
/// cached objects as live and leaked the cache.)
fn destroy_after_cross_cpu_frees_waits_for_a_held_sheaf_lock() -> TestResult {
    let c = drain_cache("t-drain-destroy")?;
    for cpu in 1..CPUS {
        let objs: Vec<usize> = (0..40)
            .filter_map(|_| c.alloc(GFP_KERNEL).ok().map(|p| p.as_ptr() as usize))
            .collect();
        kassert_eq!(objs.len(), 40);
        let addr = &c as *const KmemCache as usize;
        run_on(cpu, move || {
            // SAFETY: the test keeps the cache alive until the task is joined.
            let c = unsafe { &*(addr as *const KmemCache) };
            for p in objs {
                // SAFETY: allocated on CPU 0 from `c`, handed over whole.
                unsafe { c.free(NonNull::new_unchecked(p as *mut u8)) };
            }
        })?;
    }
    kassert!(c.info_unflushed().sheaf_objs >= 3 * 30);
    let holder = hold_sheaf_lock(&c, 2, Hold::Remote)?;
    let r = drain_while_cpu2_held(holder, "destroy", || c.destroy())?;
    kassert!(r.is_ok(), "{:?}", r.err());
    kassert!(
        kreclaim::mm::slab::slabinfo()
            .iter()
            .all(|i| i.name != "t-drain-destroy")
    );
    Ok(())
}

/// Destroy with objects still allocated (5, on CPU 3) reports exactly
/// those, with the cache's name, even while CPU 2 holds its sheaf lock
/// over cached free objects: destroy waits for the lock and drains them,
/// and they are not counted.
fn destroy_with_live_objects_reports_the_exact_count_and_name() -> TestResult {
    use kreclaim::mm::slab::{self, DestroyError, SlabBug};
    let c = drain_cache("t-drain-live")?;
    fill_ap_sheaves(&c, 40)?;
    let addr = &c as *const KmemCache as usize;
    run_on(3, move || {
        // SAFETY: the test keeps the cache alive until the task is joined.
        let c = unsafe { &*(addr as *const KmemCache) };
        for _ in 0..5 {
            // Leaked on purpose: live at destroy.
            let _ = c.alloc(GFP_KERNEL);
        }
    })?;
    kassert_eq!(c.info_unflushed().active_objs, 5);
    let holder = hold_sheaf_lock(&c, 2, Hold::Remote)?;
    let r = drain_while_cpu2_held(holder, "destroy", || c.destroy())?;
    match r {
        Err(DestroyError::LiveObjects { cache, count }) => {
            kassert_eq!(cache.as_str(), "t-drain-live");
            kassert_eq!(count, 5, "cached free objects counted as live");
        }
        other => kassert!(false, "destroy: {other:?}"),
    }
    kassert!(
        slab::reports()
            .iter()
            .any(|r| r.bug == SlabBug::LiveObjectsAtDestroy && r.cache == "t-drain-live"),
        "no LiveObjectsAtDestroy report naming the cache"
    );
    Ok(())
}

/// `slab::prefill_sheaves(cache, cpu)` run on CPU 0 fills CPU `cpu`'s main
/// sheaf, not the caller's: each AP then allocates a sheaf's worth without
/// touching the slabs. A CPU whose sheaf lock is held is refused, not
/// filled behind its holder's back.
fn prefill_fills_the_named_cpus_sheaf_and_refuses_a_held_one() -> TestResult {
    use kreclaim::mm::slab::prefill_sheaves;
    let c = drain_cache("t-prefill")?;
    let cap = c.info_unflushed().sheaf_capacity;
    kassert!(cap > 0);
    for cpu in 1..CPUS {
        kassert!(
            prefill_sheaves(&c, cpu),
            "CPU {cpu}'s sheaves were not filled"
        );
    }
    let full = c.info_unflushed();
    kassert_eq!(full.sheaf_objs, 3 * cap, "{full:?}");
    kassert_eq!(full.active_objs, 0);
    static KEPT: SpinLock<Vec<usize>> = SpinLock::new(Vec::new(), lock_class!("t_prefill_kept"));
    let addr = &c as *const KmemCache as usize;
    for cpu in 1..CPUS {
        let slabs = c.info_unflushed().num_slabs;
        run_on(cpu, move || {
            // SAFETY: the test keeps the cache alive until the task is joined.
            let c = unsafe { &*(addr as *const KmemCache) };
            for _ in 0..cap {
                if let Ok(p) = c.alloc(GFP_KERNEL) {
                    KEPT.lock().push(p.as_ptr() as usize);
                }
            }
        })?;
        let now = c.info_unflushed();
        // From the AP's own (prefilled) sheaf: had it been empty, the AP
        // would have refilled it from the slabs (sheaf_objs unchanged).
        kassert_eq!(now.sheaf_objs, (3 - cpu) * cap, "CPU {cpu}: {now:?}");
        kassert_eq!(now.active_objs, cpu * cap, "CPU {cpu}: {now:?}");
        kassert_eq!(now.num_slabs, slabs, "CPU {cpu} needed a new slab");
    }
    // CPU 2's sheaf lock held: refused, nothing moved.
    let before = c.info_unflushed();
    let holder = hold_sheaf_lock(&c, 2, Hold::Remote)?;
    let filled = prefill_sheaves(&c, 2);
    let during = c.info_unflushed();
    SHEAF_RELEASE.store(true, Ordering::SeqCst);
    join(holder, "the sheaf-lock holder")?;
    kassert!(
        !filled,
        "prefill_sheaves filled CPU 2's sheaves while its lock was held"
    );
    kassert_eq!(during.sheaf_objs, before.sheaf_objs);
    for p in KEPT.lock().drain(..) {
        // SAFETY: allocated from `c` above, not used since.
        unsafe { c.free(NonNull::new_unchecked(p as *mut u8)) };
    }
    c.destroy().or_fail("destroy")?;
    Ok(())
}

/// The task the switch hook holds in its window (its address), the hook's
/// outcome and the CPU it ran on.
static WINDOW_TASK: AtomicUsize = AtomicUsize::new(0);
static WINDOW_ARMED: AtomicBool = AtomicBool::new(false);
static WINDOW_GO: AtomicBool = AtomicBool::new(false);
static WINDOW_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);
/// 0: not seen yet; 1: another CPU found the task still on_cpu and left
/// it; 2: another CPU ran the task while its context was being saved;
/// 3: no other CPU looked at it within 20 s.
static WINDOW_OUTCOME: AtomicU32 = AtomicU32::new(0);
static WINDOW_WAKE: Completion = Completion::new();

/// Ticks every other CPU must take, after one of them has found the
/// woken task queued and declined it, before [`hold_switch_window`] closes
/// the window: 0 for the on_cpu test; 3 for the steal test (an idle CPU
/// tries to steal after each tick).
static WINDOW_EXTRA_TICKS: AtomicU64 = AtomicU64::new(0);

/// `schedule`'s switch hook for the window tests: when the watched task
/// switches out blocked, wakes it from inside the window (as a waker on
/// another CPU would, a moment too early: it sits in an idle CPU's run
/// queue while still `on_cpu` here) and holds the window open until
/// another CPU has found the task queued and declined it (then until every
/// other CPU took [`WINDOW_EXTRA_TICKS`] ticks), or ran it. Records the
/// steals that happened meanwhile in `STEAL_WINDOW_STEALS`.
fn hold_switch_window(prev: &task::Task) {
    if prev as *const task::Task as usize != WINDOW_TASK.load(Ordering::SeqCst)
        || prev.state() != TaskState::Blocked
        || !WINDOW_ARMED.swap(false, Ordering::SeqCst)
    {
        return;
    }
    let me = kreclaim::platform::cpu_id();
    WINDOW_CPU.store(me, Ordering::SeqCst);
    let extra = WINDOW_EXTRA_TICKS.load(Ordering::SeqCst);
    let skips = task::on_cpu_skips();
    let switches = prev.switches();
    let steals = all_steals();
    // This CPU still shows `prev` as current, so the wake-up queues it on
    // an idle CPU and sends that CPU a reschedule IPI.
    WINDOW_WAKE.complete();
    let t0 = kreclaim::time::now_ns();
    let mut ticks = [0u64; CPUS];
    let mut seen = false;
    let outcome = loop {
        if prev.switches() != switches || prev.state() == TaskState::Running {
            break 2;
        }
        if kreclaim::time::now_ns() - t0 > 20_000_000_000 {
            break 3;
        }
        if !seen && task::on_cpu_skips() > skips {
            // Queued and declined: from now on only a steal could move it.
            seen = true;
            for (n, t) in ticks.iter_mut().enumerate() {
                *t = cpu_ticks(n);
            }
        }
        if seen && (0..CPUS).all(|n| n == me || cpu_ticks(n) >= ticks[n] + extra) {
            break 1;
        }
        core::hint::spin_loop();
    };
    STEAL_WINDOW_STEALS.store(all_steals() - steals, Ordering::SeqCst);
    WINDOW_OUTCOME.store(outcome, Ordering::SeqCst);
    if outcome == 2 {
        // Another CPU runs on this stack now: never touch it again.
        loop {
            core::hint::spin_loop();
        }
    }
}

/// Linux's `p->on_cpu`: a task woken while its old CPU is still saving its
/// context sits in another CPU's run queue, and that CPU must not run it
/// until the switch is complete. The switch hook holds a task in exactly
/// that window and wakes it: the other CPU finds it `on_cpu` and leaves it;
/// the task runs once the window closes (there, or stolen back by its old
/// CPU). Without the handshake the other CPU
/// would resume the task from a stale context on the stack still in use.
fn a_task_woken_while_switching_out_runs_nowhere_else_until_saved() -> TestResult {
    let (window_cpu, outcome) = run_through_switch_window("switch-window", 0)?;
    match outcome {
        1 => {}
        3 => kassert!(
            false,
            "no other CPU looked at the woken task (woken onto CPU {window_cpu} itself?)"
        ),
        o => kassert!(false, "the switch window was never seen (outcome {o})"),
    }
    Ok(())
}

/// Spawns a task that waits on `WINDOW_WAKE`, arms [`hold_switch_window`]
/// (with `extra_ticks`) for its switch-out, lets it run and joins it. Returns the CPU whose
/// switch window held it, once the hook saw the window; outcome 2 (another
/// CPU ran the task inside the window) fails here, any other outcome but
/// 1 is returned for the caller to name.
fn run_through_switch_window(
    name: &'static str,
    extra_ticks: u64,
) -> Result<(usize, u32), kreclaim::harness::TestFailure> {
    WINDOW_OUTCOME.store(0, Ordering::SeqCst);
    WINDOW_GO.store(false, Ordering::SeqCst);
    STEAL_WINDOW_STEALS.store(u64::MAX, Ordering::SeqCst);
    WINDOW_EXTRA_TICKS.store(extra_ticks, Ordering::SeqCst);
    WINDOW_WAKE.reinit();
    let h = task::spawn(name, || {
        while !WINDOW_GO.load(Ordering::SeqCst) {
            task::yield_now();
        }
        WINDOW_WAKE.wait();
    })
    .or_fail("spawn")?;
    WINDOW_TASK.store(Arc::as_ptr(h.task()) as usize, Ordering::SeqCst);
    WINDOW_ARMED.store(true, Ordering::SeqCst);
    task::set_switch_hook(Some(hold_switch_window));
    WINDOW_GO.store(true, Ordering::SeqCst);
    let r = h.join_timeout(Duration::from_secs(60));
    task::set_switch_hook(None);
    WINDOW_ARMED.store(false, Ordering::SeqCst);
    kassert!(r.is_ok(), "the task did not finish");
    let window_cpu = WINDOW_CPU.load(Ordering::SeqCst);
    let outcome = WINDOW_OUTCOME.load(Ordering::SeqCst);
    kassert!(
        outcome != 2,
        "CPU {} ran the task while CPU {window_cpu} was still saving it",
        h.task().last_cpu()
    );
    Ok((window_cpu, outcome))
}

/// The task whose last switch-out the join test holds (its `Task` address).
static EXIT_TASK: AtomicUsize = AtomicUsize::new(0);
static EXIT_ARMED: AtomicBool = AtomicBool::new(false);
static EXIT_GO: AtomicBool = AtomicBool::new(false);
/// Set by the joiner once `join` returned.
static EXIT_JOINED: AtomicBool = AtomicBool::new(false);
/// Set by the hook once it held the dead task's switch.
static EXIT_HELD: AtomicBool = AtomicBool::new(false);
/// The physical address of the task's stack, as the task saw it.
static EXIT_STACK_PA: AtomicU64 = AtomicU64::new(0);

/// `schedule`'s switch hook for the join test: when the watched task
/// switches out dead (its stack not freed yet), holds the switch until the
/// joiner on CPU 0 says `join` returned, or for a second (with `join`
/// waiting for the reaping, it cannot return meanwhile).
fn hold_a_dead_tasks_last_switch(prev: &task::Task) {
    if prev as *const task::Task as usize != EXIT_TASK.load(Ordering::SeqCst)
        || prev.state() != TaskState::Dead
        || !EXIT_ARMED.swap(false, Ordering::SeqCst)
    {
        return;
    }
    let t0 = kreclaim::time::now_ns();
    while !EXIT_JOINED.load(Ordering::SeqCst) && kreclaim::time::now_ns() - t0 < 1_000_000_000 {
        core::hint::spin_loop();
    }
    EXIT_HELD.store(true, Ordering::SeqCst);
}

/// A task on CPU 1 ends while CPU 0 joins it; CPU 1 is held in the task's
/// last switch, before the stack is freed. `join` returns only after that:
/// the stack's page is no longer a stack when the joiner looks.
fn join_returns_only_after_the_tasks_cpu_freed_its_stack() -> TestResult {
    use kreclaim::mm::page_alloc::{PageOwner, page_owner};
    EXIT_ARMED.store(false, Ordering::SeqCst);
    EXIT_GO.store(false, Ordering::SeqCst);
    EXIT_JOINED.store(false, Ordering::SeqCst);
    EXIT_HELD.store(false, Ordering::SeqCst);
    EXIT_STACK_PA.store(0, Ordering::SeqCst);
    let h = task::spawn_on(1, "exit-probe", || {
        let local = 0u8;
        let va = core::hint::black_box(&local) as *const u8 as u64;
        if let Some((pa, _)) = paging::translate(va) {
            EXIT_STACK_PA.store(pa, Ordering::SeqCst);
        }
        while !EXIT_GO.load(Ordering::SeqCst) {
            task::yield_now();
        }
    })
    .or_fail("spawn_on CPU 1")?;
    EXIT_TASK.store(Arc::as_ptr(h.task()) as usize, Ordering::SeqCst);
    EXIT_ARMED.store(true, Ordering::SeqCst);
    task::set_switch_hook(Some(hold_a_dead_tasks_last_switch));
    wait_for("the task to find its stack", || {
        EXIT_STACK_PA.load(Ordering::SeqCst) != 0
    })?;
    let pa = PhysAddr::new(EXIT_STACK_PA.load(Ordering::SeqCst));
    let owner_running = page_owner(pa);
    EXIT_GO.store(true, Ordering::SeqCst);
    let r = h.join_timeout(Duration::from_secs(60));
    let owner_joined = page_owner(pa);
    EXIT_JOINED.store(true, Ordering::SeqCst);
    let held = wait_for("the hook to hold the task's last switch", || {
        EXIT_HELD.load(Ordering::SeqCst)
    });
    task::set_switch_hook(None);
    EXIT_ARMED.store(false, Ordering::SeqCst);
    kassert!(r.is_ok(), "the task did not finish: {r:?}");
    held?;
    kassert_eq!(
        owner_running,
        Some(PageOwner::Stack),
        "the task's stack page"
    );
    kassert!(
        owner_joined != Some(PageOwner::Stack),
        "join returned while CPU 1 still held the task's stack ({owner_joined:?})"
    );
    Ok(())
}

/// Steals counted while the steal test's window was open (`u64::MAX`:
/// the window never closed on its own terms).
static STEAL_WINDOW_STEALS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Every CPU's steals so far.
fn all_steals() -> u64 {
    (0..CPUS).map(task::cpu_steals).sum()
}

/// Ticks of CPU `n` (the boot CPU's PIT runs at 1 kHz, the APs' LAPIC
/// timers at 100 Hz: the boot CPU's count is scaled down).
fn cpu_ticks(n: usize) -> u64 {
    if n == 0 {
        kreclaim::arch::x86_64::timer::ticks() / 10
    } else {
        smp::cpu(n).map_or(0, |c| c.ticks())
    }
}

/// `steal`'s `on_cpu` filter: a task woken while its old CPU is still
/// saving its context sits in another CPU's run queue; idle CPUs looking
/// for work must leave it there (it cannot run anywhere yet) instead of
/// moving it from queue to queue. The switch hook holds the task in that
/// window for three ticks of every other CPU: no steal happens.
fn idle_cpus_do_not_steal_a_task_still_switching_out() -> TestResult {
    let (window_cpu, outcome) = run_through_switch_window("steal-window", 3)?;
    match outcome {
        1 => {}
        3 => kassert!(
            false,
            "no CPU declined the woken task, or the other CPUs did not tick (window on CPU {window_cpu})"
        ),
        o => kassert!(false, "the switch window was never seen (outcome {o})"),
    }
    kassert_eq!(
        STEAL_WINDOW_STEALS.load(Ordering::SeqCst),
        0,
        "idle CPUs stole the task while CPU {window_cpu} was still saving it"
    );
    Ok(())
}

/// What CPU 2 does for the TLB test: with interrupts masked (no tick, no
/// IPI, so no TLB flush), reads a word of a task stack (its translation is
/// now in CPU 2's TLB) and waits until told.
static TLB_ADDR: AtomicUsize = AtomicUsize::new(0);
static TLB_HELD: AtomicBool = AtomicBool::new(false);
static TLB_GO: AtomicBool = AtomicBool::new(false);

fn hold_a_stale_translation() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: a mapped stack page of the test's (mapped until the
        // test frees it, after this read).
        let _ = unsafe { core::ptr::read_volatile(TLB_ADDR.load(Ordering::SeqCst) as *const u64) };
        TLB_HELD.store(true, Ordering::SeqCst);
        while !TLB_GO.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
    });
    TLB_HELD.store(false, Ordering::SeqCst);
}

/// A task stack's slot, unmapped, is not mapped again (to a new stack's
/// frames) while a CPU that may still hold the old translation has not
/// flushed its TLB: the TLB generations. CPU 2, interrupts masked after
/// touching the stack, flushes nothing, so the next stack takes another
/// slot; once CPU 2 has ticked (and flushed), the slot is used again.
fn a_freed_stack_slot_waits_for_every_cpus_tlb_flush() -> TestResult {
    use kreclaim::arch::x86_64::context::{alloc_stack, free_stack};
    let s1 = alloc_stack(4096).or_fail("alloc_stack")?;
    let slot = s1.bottom;
    TLB_ADDR.store(slot, Ordering::SeqCst);
    TLB_HELD.store(false, Ordering::SeqCst);
    TLB_GO.store(false, Ordering::SeqCst);
    kassert!(smp::call_on_ap(2, hold_a_stale_translation));
    wait_for("CPU 2 to touch the stack", || {
        TLB_HELD.load(Ordering::SeqCst)
    })?;
    free_stack(s1);
    let s2 = alloc_stack(4096);
    let reused_early = s2.as_ref().is_some_and(|s| s.bottom == slot);
    TLB_GO.store(true, Ordering::SeqCst);
    wait_for("CPU 2 to let go", || !TLB_HELD.load(Ordering::SeqCst))?;
    let s2 = s2.or_fail("alloc_stack with a slot waiting for CPU 2")?;
    kassert!(
        !reused_early,
        "the slot at {slot:#x} was mapped again before CPU 2 flushed its TLB"
    );
    // CPU 2's next ticks flush: then the slot comes back.
    let t = smp::cpu(2).unwrap().ticks();
    wait_for("two more ticks on CPU 2", || {
        smp::cpu(2).unwrap().ticks() >= t + 2
    })?;
    let mut held = Vec::new();
    let mut back = false;
    for _ in 0..64 {
        let Some(s) = alloc_stack(4096) else { break };
        back = s.bottom == slot;
        held.push(s);
        if back {
            break;
        }
    }
    for s in held {
        free_stack(s);
    }
    free_stack(s2);
    kassert!(
        back,
        "the slot was never used again after every CPU flushed"
    );
    Ok(())
}

/// One task per CPU allocates and frees pages of orders 0..3 through its
/// CPU's per-CPU lists and the zone; a bitmap of PFNs catches a page handed
/// to two owners, a pattern a page written by another.
fn page_allocator_torture_on_every_cpu() -> TestResult {
    const ROUNDS: usize = 1500;
    const MAX_PFNS: usize = 1 << 20;
    static OWNED: [AtomicU64; MAX_PFNS / 64] = [const { AtomicU64::new(0) }; MAX_PFNS / 64];
    static BAD: AtomicUsize = AtomicUsize::new(0);
    static DONE: AtomicU64 = AtomicU64::new(0);
    fn claim(pfn: u64, pages: u64, on: bool) {
        for p in pfn..pfn + pages {
            let (w, b) = ((p as usize / 64) % OWNED.len(), 1u64 << (p % 64));
            let old = if on {
                OWNED[w].fetch_or(b, Ordering::SeqCst)
            } else {
                OWNED[w].fetch_and(!b, Ordering::SeqCst)
            };
            if (old & b != 0) == on {
                BAD.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let mut hs = Vec::new();
    for cpu in 0..CPUS {
        hs.push(
            task::spawn_on(cpu, "page-torture", move || {
                let mut held: Vec<(PhysAddr, u32, u64)> = Vec::with_capacity(16);
                for i in 0..ROUNDS {
                    let order = (i % 4) as u32;
                    if let Ok(pa) = alloc_pages(GFP_KERNEL, order) {
                        claim(pa.pfn(), 1 << order, true);
                        let tag = ((cpu as u64) << 32) | i as u64;
                        // SAFETY: the block is ours; its first word is in it.
                        unsafe { (page_address(pa) as *mut u64).write(tag) };
                        held.push((pa, order, tag));
                    }
                    if held.len() == 16 || i + 1 == ROUNDS {
                        for (pa, order, tag) in held.drain(..) {
                            // SAFETY: as above, still ours.
                            if unsafe { (page_address(pa) as *const u64).read() } != tag {
                                BAD.fetch_add(1, Ordering::SeqCst);
                            }
                            claim(pa.pfn(), 1 << order, false);
                            free_pages(pa, order);
                        }
                    }
                }
                DONE.fetch_add(1, Ordering::SeqCst);
            })
            .or_fail("spawn_on")?,
        );
    }
    for h in hs {
        join(h, "a page torture task")?;
    }
    kassert_eq!(DONE.load(Ordering::SeqCst), CPUS as u64);
    kassert_eq!(BAD.load(Ordering::SeqCst), 0, "a page had two owners");
    kassert!(OWNED.iter().all(|w| w.load(Ordering::SeqCst) == 0));
    drain_all_pages();
    for cpu in 0..CPUS {
        kassert_eq!(pcp_count(cpu), 0, "CPU {cpu}'s list after the drain");
    }
    Ok(())
}

/// A task on CPU 1 allocates and frees order-0 pages through its list
/// (refills from the zone, flushes above `high`) while CPU 0 drains every
/// CPU's lists (`drain_all_pages`) over and over. The `pcp->lock` makes
/// the drain and the owner's fast path take turns; if both could own the
/// list at once, blocks would be lost or listed twice. Lockdep is off, so
/// that the owner takes the fast path (no guard). Afterwards the
/// accounting is exact: every page is back, free pages + listed pages ==
/// what was free before, and no block was handed to two owners.
fn remote_drains_and_the_owners_fast_path_never_share_a_pcp_list() -> TestResult {
    const ROUNDS: usize = 3000;
    const HOLD: usize = 48;
    static READY: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);
    static DONE: AtomicBool = AtomicBool::new(false);
    static EXIT: AtomicBool = AtomicBool::new(false);
    static BAD: AtomicUsize = AtomicUsize::new(0);
    static FAILED: AtomicUsize = AtomicUsize::new(0);
    READY.store(false, Ordering::SeqCst);
    GO.store(false, Ordering::SeqCst);
    DONE.store(false, Ordering::SeqCst);
    EXIT.store(false, Ordering::SeqCst);
    BAD.store(0, Ordering::SeqCst);
    FAILED.store(0, Ordering::SeqCst);
    let h = task::spawn_on(1, "pcp-owner", || {
        // Running: the switch here freed the stack of a task that ended on
        // CPU 1 earlier, if any (the accounting below must not see it).
        READY.store(true, Ordering::SeqCst);
        while !GO.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        // No allocation here but the pages: the counts must stay exact.
        let mut held = [PhysAddr::new(0); HOLD];
        for i in 0..ROUNDS {
            let n = 1 + i % HOLD;
            let mut got = 0;
            for slot in held.iter_mut().take(n) {
                match alloc_pages(GFP_KERNEL, 0) {
                    Ok(pa) => {
                        // SAFETY: the page is ours; tag it with its address.
                        unsafe { (page_address(pa) as *mut u64).write(pa.as_u64()) };
                        *slot = pa;
                        got += 1;
                    }
                    Err(_) => {
                        FAILED.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
            for pa in held.iter().take(got) {
                // SAFETY: still ours: a page handed out twice meanwhile
                // would carry another tag (or the same page twice in
                // `held`, caught below by the free).
                if unsafe { (page_address(*pa) as *const u64).read() } != pa.as_u64() {
                    BAD.fetch_add(1, Ordering::SeqCst);
                }
            }
            for pa in held.iter().take(got) {
                free_pages(*pa, 0);
            }
        }
        DONE.store(true, Ordering::SeqCst);
        // Its stack is freed when it ends: not before the test has counted.
        while !EXIT.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
    })
    .or_fail("spawn_on")?;
    if let Err(e) = wait_for("the pcp owner to run", || READY.load(Ordering::SeqCst)) {
        EXIT.store(true, Ordering::SeqCst);
        return Err(e);
    }
    // The fast paths run with lockdep off (the general path, with it on,
    // takes the same lock through a guard).
    let mode = lockdep::mode();
    lockdep::set_mode(lockdep::LockdepMode::Off);
    drain_all_pages();
    let bad_frees = kreclaim::mm::page_alloc::stats().snapshot().bad_frees;
    let before = nr_free_pages() + nr_pcp_pages();
    GO.store(true, Ordering::SeqCst);
    let mut drains = 0u64;
    while !DONE.load(Ordering::SeqCst) {
        drain_all_pages();
        drains += 1;
    }
    lockdep::set_mode(mode);
    // The owner is done and holds nothing: everything is free again.
    let after = nr_free_pages() + nr_pcp_pages();
    drain_all_pages();
    let drained = (nr_free_pages(), nr_pcp_pages());
    EXIT.store(true, Ordering::SeqCst);
    join(h, "the pcp owner")?;
    kassert_eq!(FAILED.load(Ordering::SeqCst), 0, "an allocation failed");
    kassert_eq!(BAD.load(Ordering::SeqCst), 0, "a page was handed out twice");
    kassert_eq!(
        kreclaim::mm::page_alloc::stats().snapshot().bad_frees,
        bad_frees,
        "a block was freed twice (listed twice)"
    );
    kassert!(drains > 0);
    kassert_eq!(
        after,
        before,
        "free + listed pages after {drains} remote drains"
    );
    kassert_eq!(drained, (before, 0), "after a last drain");
    Ok(())
}

/// `try_arc`'s preload names the CPU it is for: while CPU 0 has a block
/// preloaded for its next global allocation (interrupts masked), a task on
/// CPU 1 allocates the same layout through the global allocator and gets
/// another block; CPU 0's own next allocation then gets the preloaded one.
/// (Without the CPU check, CPU 1's allocation took it: two owners would
/// follow once `Arc::new` wrote into the block it believes is its own.)
fn a_preloaded_block_goes_to_its_own_cpus_next_allocation_only() -> TestResult {
    use core::alloc::Layout;
    static READY: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);
    static TOOK: AtomicUsize = AtomicUsize::new(0);
    static EXIT: AtomicBool = AtomicBool::new(false);
    const SIZE: usize = 96;
    for f in [&READY, &GO, &EXIT] {
        f.store(false, Ordering::SeqCst);
    }
    TOOK.store(0, Ordering::SeqCst);
    let layout = Layout::from_size_align(SIZE, 8).or_fail("layout")?;
    let h = task::spawn_on(1, "preload-other-cpu", move || {
        READY.store(true, Ordering::SeqCst);
        while !GO.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc::alloc::alloc(layout) };
        TOOK.store(p as usize | 1, Ordering::SeqCst);
        while !EXIT.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        if !p.is_null() {
            // SAFETY: allocated above with this layout.
            unsafe { alloc::alloc::dealloc(p, layout) };
        }
    })
    .or_fail("spawn_on")?;
    let ready = wait_for("the task on CPU 1 to run", || READY.load(Ordering::SeqCst));
    let r = match ready {
        Ok(()) => kreclaim::mm::fallible::with_preloaded(layout, |block| {
            GO.store(true, Ordering::SeqCst);
            let t0 = kreclaim::time::now_ns();
            while TOOK.load(Ordering::SeqCst) == 0 && kreclaim::time::now_ns() - t0 < 20_000_000_000
            {
                core::hint::spin_loop();
            }
            // This CPU's next global allocation: the preloaded block's.
            // SAFETY: a non-zero-sized layout.
            let mine = unsafe { alloc::alloc::alloc(layout) };
            (block.as_ptr() as usize, mine)
        })
        .or_fail("preload"),
        Err(e) => Err(e),
    };
    EXIT.store(true, Ordering::SeqCst);
    join(h, "the task on CPU 1")?;
    let (block, mine) = r?;
    let other = TOOK.load(Ordering::SeqCst) & !1;
    if !mine.is_null() {
        // SAFETY: allocated inside the preload with this layout.
        unsafe { alloc::alloc::dealloc(mine, layout) };
    }
    kassert!(TOOK.load(Ordering::SeqCst) != 0, "CPU 1 never allocated");
    kassert!(other != 0, "CPU 1's allocation failed");
    kassert!(
        other != block,
        "CPU 1's allocation took the block preloaded for CPU 0"
    );
    kassert_eq!(
        mine as usize,
        block,
        "CPU 0's next allocation did not get its preloaded block"
    );
    Ok(())
}

static LD_A: Mutex<()> = Mutex::new((), lock_class!("smp_ld_a"));
static LD_B: Mutex<()> = Mutex::new((), lock_class!("smp_ld_b"));

/// A then B on CPU 1, later B then A on CPU 2: lockdep's one graph sees
/// the inversion across CPUs and names the CPU that closed it.
fn lockdep_finds_an_abba_across_cpus() -> TestResult {
    let before = lockdep::report_count();
    join(
        task::spawn_on(1, "ab-on-1", || {
            let _a = LD_A.lock();
            let _b = LD_B.lock();
        })
        .or_fail("spawn_on")?,
        "ab",
    )?;
    join(
        task::spawn_on(2, "ba-on-2", || {
            let _b = LD_B.lock();
            let _a = LD_A.lock();
        })
        .or_fail("spawn_on")?,
        "ba",
    )?;
    let r = lockdep::reports_since(before);
    kassert_eq!(r.len(), 1);
    kassert_eq!(r[0].kind, ReportKind::CircularDependency);
    kassert_eq!(r[0].cpu, 2);
    kassert_eq!(r[0].task.as_str(), "ba-on-2");
    kassert!(r[0].classes.contains(&"smp_ld_a") && r[0].classes.contains(&"smp_ld_b"));
    Ok(())
}

/// The double fault seen on the AP: (vector, CPU, stack named), set once.
static AP_FAULT: spin::Once<(u8, usize, Option<InlineName>, u64)> = spin::Once::new();

/// Fault hook for the overflow case: on an AP, records the report and halts
/// that AP for good; anywhere else the fault is a real failure.
fn ap_fault_hook(r: &FaultReport) -> ! {
    let cpu = smp::cpu_id();
    if cpu == 0 {
        kreclaim::harness::abort_current(format_args!("unexpected fault on the boot CPU: {r}"))
    }
    AP_FAULT.call_once(|| (r.vector, cpu, r.stack_overflow, r.rsp));
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [depth; 64];
    core::hint::black_box(&mut frame);
    recurse(depth + 1) + frame[3]
}

fn overflow_this_stack() {
    recurse(0);
}

fn ap_stack_overflow_hits_its_guard_page_and_double_faults_on_its_ist() -> TestResult {
    const VICTIM: usize = CPUS - 1;
    set_fault_hook(ap_fault_hook);
    kassert!(smp::call_on_ap(VICTIM, overflow_this_stack));
    wait_for("the AP's double fault", || AP_FAULT.get().is_some())?;
    let (vector, cpu, stack, rsp) = *AP_FAULT.get().unwrap();
    kassert_eq!(vector, 8, "not a double fault");
    kassert_eq!(cpu, VICTIM);
    kassert!(
        stack.as_ref().is_some_and(|s| *s == "CPU 3 kernel"),
        "guard owner {stack:?}"
    );
    // The faulting RSP lies just above the guard page of the AP's own stack.
    let (guard, bottom, top) = smp::ap_stacks(VICTIM).or_fail("CPU 3's stacks")?[0];
    kassert!(
        rsp >= guard && rsp < top,
        "RSP {rsp:#x} at the fault is outside CPU 3's stack [{bottom:#x}, {top:#x})"
    );
    Ok(())
}
