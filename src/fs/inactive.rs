//! Inactivation (XFS's `xfs_inactive`): an unlinked inode's blocks and the
//! inode itself are freed on disk when its last reference goes. The inode
//! cache calls it (`Fs::irele`), so it sits below the operations and uses
//! only bmap, allocation and transactions.

use super::FsError;
use super::format::{InodeCore, Mode};
use super::icache::{I_UNLINKED, XfsInode};
use super::state::Fs;
use super::trans::Transaction;
use core::sync::atomic::Ordering;

impl Fs {
    /// `xfs_inactive`: frees an unlinked inode's blocks and the inode on
    /// disk. Called by the task that dropped the last reference, with
    /// `I_INACTIVATING` set (so no new reference exists) and no ILOCK.
    pub(crate) fn inactivate(&self, ip: &XfsInode) -> Result<(), FsError> {
        let mut tp = Transaction::alloc_nofail(self)?;
        let mut g = ip.ilock.down_write();
        if g.mode == Mode::Free || g.nlink != 0 || ip.flags() & I_UNLINKED == 0 {
            return Ok(());
        }
        let r = self.truncate_blocks(&mut g, 0).and_then(|()| {
            self.free_inode_bit(ip.ino)?;
            let generation = g.generation.wrapping_add(1);
            *g = InodeCore::free(ip.ino, generation);
            ip.clear(I_UNLINKED);
            Ok(())
        });
        tp.log_inode(ip);
        tp.commit();
        if r.is_ok() {
            self.stats.inactivations.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}
