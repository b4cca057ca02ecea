//! GDT and TSS. The TSS gives the double fault, NMI and machine check their
//! own IST stacks, so a fault on a broken stack can still be reported.

use super::stacks::{DOUBLE_FAULT_STACK, IST_STACK_BYTES, MCE_STACK, NMI_STACK, PAGE};
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (0-based) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot of the NMI stack.
pub const NMI_IST: u16 = 1;
/// IST slot of the machine-check stack.
pub const MCE_IST: u16 = 2;

type Gdt = (
    GlobalDescriptorTable,
    SegmentSelector,
    SegmentSelector,
    SegmentSelector,
);

static TSS: spin::Once<TaskStateSegment> = spin::Once::new();
static GDT: spin::Once<Gdt> = spin::Once::new();

/// The APs' own TSSs and GDTs, by CPU number (slot 0, the boot CPU's, unused):
/// a TSS descriptor turns busy when loaded, so each CPU needs its own.
static AP_TSS: [spin::Once<TaskStateSegment>; super::smp::MAX_CPUS] =
    [const { spin::Once::new() }; super::smp::MAX_CPUS];
static AP_GDT: [spin::Once<Gdt>; super::smp::MAX_CPUS] =
    [const { spin::Once::new() }; super::smp::MAX_CPUS];

fn top<const N: usize>(s: *mut super::stacks::GuardedStack<N>) -> VirtAddr {
    VirtAddr::new((s as usize + PAGE + IST_STACK_BYTES) as u64)
}

fn build(tss: &'static TaskStateSegment) -> Gdt {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    (gdt, code, data, tss_sel)
}

fn load((gdt, code, data, tss_sel): &'static Gdt) {
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded.
    unsafe {
        CS::set_reg(*code);
        DS::set_reg(*data);
        ES::set_reg(*data);
        SS::set_reg(*data);
        load_tss(*tss_sel);
    }
}

/// Loads the GDT and TSS and reloads the segment registers (once, at boot).
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = top(&raw mut DOUBLE_FAULT_STACK);
        tss.interrupt_stack_table[NMI_IST as usize] = top(&raw mut NMI_STACK);
        tss.interrupt_stack_table[MCE_IST as usize] = top(&raw mut MCE_STACK);
        tss
    });
    load(GDT.call_once(|| build(tss)));
}

/// CPU `cpu`'s TSS, once that CPU has loaded it.
pub fn tss(cpu: usize) -> Option<&'static TaskStateSegment> {
    match cpu {
        0 => TSS.get(),
        n => AP_TSS.get(n)?.get(),
    }
}

/// Loads AP `cpu`'s own GDT and TSS, whose IST slots hold `ist_tops`
/// (double fault, NMI, machine check): called once by that AP.
pub fn init_ap(cpu: usize, ist_tops: [u64; 3]) {
    let tss = AP_TSS[cpu].call_once(|| {
        let mut tss = TaskStateSegment::new();
        for (slot, top) in [DOUBLE_FAULT_IST, NMI_IST, MCE_IST]
            .into_iter()
            .zip(ist_tops)
        {
            tss.interrupt_stack_table[slot as usize] = VirtAddr::new(top);
        }
        tss
    });
    load(AP_GDT[cpu].call_once(|| build(tss)));
}
