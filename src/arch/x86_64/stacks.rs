//! Statically allocated kernel stacks, each with an unmapped guard page below
//! it, and the lookup the fault handlers use to name an overflowed stack.

use crate::mm::inline_name::InlineName;

/// Page size in bytes (also the guard page's size).
pub const PAGE: usize = 4096;

/// A stack preceded by one guard page. The paging code leaves the guard
/// page unmapped, so running off the bottom faults instead of corrupting.
#[repr(C, align(4096))]
pub struct GuardedStack<const N: usize> {
    guard: [u8; PAGE],
    stack: [u8; N],
}

impl<const N: usize> GuardedStack<N> {
    /// A zeroed stack.
    pub const fn new() -> Self {
        Self {
            guard: [0; PAGE],
            stack: [0; N],
        }
    }
}

impl<const N: usize> Default for GuardedStack<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Usable bytes of the boot stack.
pub const BOOT_STACK_BYTES: usize = 256 * 1024;
/// Offset of the boot stack's top from the start of [`BOOT_STACK`].
pub const BOOT_STACK_SIZE: usize = PAGE + BOOT_STACK_BYTES;
/// Usable bytes of each IST stack.
pub const IST_STACK_BYTES: usize = 32 * 1024;

/// The boot task's stack.
pub static mut BOOT_STACK: GuardedStack<BOOT_STACK_BYTES> = GuardedStack::new();
/// The double-fault IST stack.
pub static mut DOUBLE_FAULT_STACK: GuardedStack<IST_STACK_BYTES> = GuardedStack::new();
/// The NMI IST stack.
pub static mut NMI_STACK: GuardedStack<IST_STACK_BYTES> = GuardedStack::new();
/// The machine-check IST stack.
pub static mut MCE_STACK: GuardedStack<IST_STACK_BYTES> = GuardedStack::new();

/// (name, guard page address, stack top) of every static stack.
pub fn static_stacks() -> [(&'static str, usize, usize); 4] {
    fn span<const N: usize>(s: *mut GuardedStack<N>) -> (usize, usize) {
        let base = s as usize;
        (base, base + PAGE + N)
    }
    let boot = span(&raw mut BOOT_STACK);
    let df = span(&raw mut DOUBLE_FAULT_STACK);
    let nmi = span(&raw mut NMI_STACK);
    let mce = span(&raw mut MCE_STACK);
    [
        ("boot", boot.0, boot.1),
        ("double-fault IST", df.0, df.1),
        ("NMI IST", nmi.0, nmi.1),
        ("machine-check IST", mce.0, mce.1),
    ]
}

/// Lookup for stacks created later (task stacks): returns a copy of the
/// owning stack's name when `addr` lies in one of their guard pages (a copy:
/// the owner's name need not outlive the report).
pub type GuardLookup = fn(addr: u64) -> Option<InlineName>;

static DYNAMIC_LOOKUP: crate::sync::Hook<GuardLookup> = crate::sync::Hook::new();

/// Registers the lookup for dynamically allocated stacks (one at a time).
pub fn set_dynamic_guard_lookup(f: GuardLookup) {
    DYNAMIC_LOOKUP.set(Some(f));
}

/// Names the stack whose guard page contains `addr`, if any.
pub fn guard_page_owner(addr: u64) -> Option<InlineName> {
    let a = addr as usize;
    for (name, guard, _) in static_stacks() {
        if a >= guard && a < guard + PAGE {
            return Some(InlineName::new(name));
        }
    }
    super::smp::ap_guard_owner(addr)
        .map(InlineName::new)
        .or_else(|| DYNAMIC_LOOKUP.get().and_then(|f| f(addr)))
}
