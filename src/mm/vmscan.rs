//! Reclaim (stub). The page allocator calls these; the real reclaim
//! (shrinkers, kswapd) replaces this file.

use crate::mm::gfp::Gfp;

/// Direct reclaim: returns the number of pages reclaimed. Nothing yet.
pub fn try_to_free_pages(gfp: Gfp, order: u32) -> usize {
    let _ = (gfp, order);
    0
}

/// Asks kswapd to reclaim up to the high watermark. Nothing yet.
pub fn wakeup_kswapd(order: u32) {
    let _ = order;
}
