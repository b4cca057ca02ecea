//! Per-task flags with Linux's names and values (`include/linux/sched.h`).

bitflags::bitflags! {
    /// Task flags (`current->flags`): scoped allocation constraints and reclaim roles.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct TaskFlags: u32 {
        /// Reclaiming: may dip into reserves, never recurses into reclaim.
        const PF_MEMALLOC = 0x800;
        /// This task is kswapd.
        const PF_KSWAPD = 0x20000;
        /// A kernel daemon (kswapd, the filesystem's flusher). Direct
        /// reclaim never throttles it: reclaim may be waiting for its work.
        /// Tasks without it stand for user processes.
        const PF_KTHREAD = 0x0020_0000;
        /// All allocations behave as if __GFP_FS were clear.
        const PF_MEMALLOC_NOFS = 0x40000;
        /// All allocations behave as if __GFP_IO and __GFP_FS were clear.
        const PF_MEMALLOC_NOIO = 0x80000;
        /// Allocations may not be movable (pinning).
        const PF_MEMALLOC_PIN = 0x1000_0000;
    }
}
