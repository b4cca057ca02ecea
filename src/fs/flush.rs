//! Inode writeback: cluster flushing and the flusher thread (XFS's AIL
//! pushing, `xfsaild`, and `xfs_iflush_cluster`, simplified).
//!
//! Dirty inode cores are written a whole cluster (one block of 16 inodes)
//! at a time. `Fs::flush_cluster`:
//!
//! 1. under the AG lock, picks the cluster's inodes to write (dirty ones
//!    not pinned in the log; every present one for the `broken` reclaim
//!    path) that are neither being reclaimed nor flushed, and sets
//!    I_FLUSHING on them (reclaim
//!    requeues I_FLUSHING inodes, so they stay alive);
//! 2. gets the cluster buffer (this may allocate: done before any ILOCK);
//! 3. takes their ILOCKs shared: the first with `first`'s mode (trylock for
//!    the flusher thread, blocking for `sync`), the others with the
//!    policy's `cluster_ilock` (trylock; blocking under `broken`); a failed
//!    trylock skips the inode (counted) and clears its I_FLUSHING;
//! 4. copies every locked dirty core that is not pinned into the buffer
//!    and writes the block (a pinned core must wait for its checkpoint);
//! 5. on success clears I_DIRTY and records when the write completes on the
//!    device (`flush_done_ns`: XFS keeps the inode's flush lock until the
//!    buffer IO completes, so reclaim waits for or skips it until then); on an IO error prints which inodes and
//!    block failed, counts it, and leaves them dirty (so neither lost nor
//!    reclaimable); clears I_FLUSHING.
//!
//! The flusher thread `xfsaild`, when kicked, forces the log (and waits:
//! it is a kernel thread, nobody's allocation waits for it) so that the
//! inodes committed so far are unpinned; it walks the AGs for clusters with
//! dirty unpinned inodes every second (XFS leaves logged inodes dirty until the AIL is
//! pushed, so reclaim meets dirty inodes), and at once when kicked (the inode shrinker kicks it
//! when it meets dirty reclaimable inodes; sync and unmount flush directly).

use super::FsError;
use super::format::{AG_FIRST_CLUSTER, INODES_PER_CLUSTER, InodeCore, ino_to_ag, ino_to_agino};
use super::icache::{I_DIRTY, I_FLUSHING, I_RECLAIM, XfsInode};
use super::policy::IlockMode;
use super::state::Fs;
use crate::mm::fs_reclaim::FsReclaimGuard;
use crate::mm::gfp::{GFP_KERNEL, Gfp};
use crate::mm::memstall::{StallPart, StallTimer};
use crate::mm::scope::MemallocScope;
use crate::sync::RwSemReadGuard;
use alloc::sync::Arc;
use core::ptr;
use core::sync::atomic::Ordering;
use core::time::Duration;

const N: usize = INODES_PER_CLUSTER as usize;

/// How often the flusher thread looks for dirty inodes.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(1000);

impl Fs {
    /// Writes back the cluster `cluster` of AG `ag`; see the module docs.
    /// `held` is an inode of the cluster the caller already holds
    /// exclusively (reclaim's candidate). Returns how many cores were
    /// written.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn flush_cluster(
        &self,
        ag: u32,
        cluster: u32,
        first: IlockMode,
        rest: IlockMode,
        all_present: bool,
        held: Option<(&XfsInode, &InodeCore)>,
        gfp: Gfp,
    ) -> Result<u32, FsError> {
        let pag = &self.perags[ag as usize];
        let base = cluster * INODES_PER_CLUSTER;
        let held_ptr = held.map_or(ptr::null(), |(ip, _)| ip as *const XfsInode);
        // 1. Pick.
        let mut picked: [*const XfsInode; N] = [ptr::null(); N];
        let mut np = 0;
        {
            let ici = pag.ici.lock();
            for s in 0..N {
                let p = ici.slots[base as usize + s];
                if p.is_null() || ptr::eq(p, held_ptr) {
                    continue;
                }
                // SAFETY: indexed, AG lock held.
                let ip = unsafe { &*p };
                let f = ip.flags();
                if f & (I_RECLAIM | I_FLUSHING) != 0
                    || (!all_present && (f & I_DIRTY == 0 || self.ipinned(ip)))
                {
                    continue;
                }
                ip.set(I_FLUSHING);
                picked[np] = p;
                np += 1;
            }
        }
        if np == 0 && held.is_none() {
            return Ok(0);
        }
        // Every deref of `picked[..np]` below relies on this: I_FLUSHING,
        // set by us under the AG lock, keeps the inode indexed and alive
        // until we clear it. An inode whose ILOCK trylock fails in step 3
        // is unpicked there and never dereferenced again.
        let unpick_all = || {
            for &p in &picked[..np] {
                // SAFETY: called before step 3, so every picked inode still
                // has our I_FLUSHING (this clears it) and is alive.
                unsafe { &*p }.clear(I_FLUSHING);
            }
        };
        // 2. The cluster buffer, before any ILOCK: this may allocate.
        let blk = self.sb.geometry.ag_start(ag) + u64::from(AG_FIRST_CLUSTER + cluster);
        let bp = match self.buf_get(blk, gfp) {
            Ok(b) => b,
            Err(e) => {
                unpick_all();
                return Err(e);
            }
        };
        // 3. ILOCKs.
        let mut guards: [Option<RwSemReadGuard<'_, InodeCore>>; N] = [const { None }; N];
        for (i, &p) in picked[..np].iter().enumerate() {
            // SAFETY: picked and I_FLUSHING (cleared only below, after the
            // last use of `ip` in this iteration): the inode is alive.
            let ip = unsafe { &*p };
            let mode = if i == 0 { first } else { rest };
            guards[i] = match mode {
                IlockMode::Trylock => ip.ilock.try_read(),
                // Subclass 0 on purpose: these may be referenced inodes, so
                // lockdep must see them as the ILOCKs operations take.
                IlockMode::Blocking => {
                    let _stall = StallTimer::start(StallPart::Lock);
                    Some(ip.ilock.down_read())
                }
            };
            if guards[i].is_none() {
                ip.clear(I_FLUSHING);
                self.stats
                    .flush_trylock_skips
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        // 4. Copy the dirty cores and write the block.
        let mut was_dirty = [false; N];
        let mut held_dirty = false;
        let mut count = 0u32;
        let mut done_ns = 0u64;
        let res = (|| -> Result<(), FsError> {
            let mut g = bp.lock_read()?;
            for i in 0..np {
                if let Some(core) = guards[i].as_deref() {
                    // SAFETY: a guard is held, so this inode kept I_FLUSHING
                    // in step 3 and is alive.
                    let ip = unsafe { &*picked[i] };
                    // Pinned: its checkpoint is not written yet. (It cannot
                    // become pinned meanwhile: commits hold the ILOCK
                    // exclusively.)
                    if ip.flags() & I_DIRTY != 0 && !self.ipinned(ip) {
                        core.encode_in_cluster(g.data_mut())?;
                        was_dirty[i] = true;
                        count += 1;
                    }
                }
            }
            if let Some((ip, core)) = held
                && ip.flags() & I_DIRTY != 0
                && !self.ipinned(ip)
            {
                core.encode_in_cluster(g.data_mut())?;
                held_dirty = true;
                count += 1;
            }
            if count > 0 {
                done_ns = g.write_async()?;
            }
            Ok(())
        })();
        // 5. Outcome.
        match &res {
            Ok(()) => {
                if count > 0 {
                    self.stats.cluster_flushes.fetch_add(1, Ordering::Relaxed);
                }
                let clean = |ip: &XfsInode| {
                    // The flush lock stays held until the write completes.
                    ip.flush_done_ns.fetch_max(done_ns, Ordering::AcqRel);
                    if ip.clear(I_DIRTY) & I_DIRTY != 0 {
                        self.stats.dirty.fetch_sub(1, Ordering::Relaxed);
                    }
                };
                for i in 0..np {
                    if was_dirty[i] {
                        // SAFETY: written in step 4, so its ILOCK guard is
                        // still held and I_FLUSHING still set: it is alive.
                        clean(unsafe { &*picked[i] });
                    }
                }
                if held_dirty && let Some((ip, _)) = held {
                    clean(ip);
                }
            }
            Err(e) => {
                self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                for i in 0..np {
                    if guards[i].is_none() {
                        continue; // unpicked in step 3: may be gone
                    }
                    // SAFETY: its ILOCK guard is held, so the inode kept
                    // I_FLUSHING in step 3 and is alive.
                    let ip = unsafe { &*picked[i] };
                    if ip.flags() & I_DIRTY != 0 {
                        crate::println!(
                            "xfs: writeback of inode {} (cluster block {blk}) failed: {e}; the inode stays dirty",
                            ip.ino
                        );
                    }
                }
                if let Some((ip, _)) = held {
                    crate::println!(
                        "xfs: writeback of inode {} (cluster block {blk}) failed: {e}; the inode stays dirty",
                        ip.ino
                    );
                }
            }
        }
        // Unlock, then unpick the inodes still flagged: those whose trylock
        // failed were unpicked in step 3 and may be reclaimed by now.
        let locked: [bool; N] = core::array::from_fn(|i| guards[i].is_some());
        for g in guards.iter_mut() {
            *g = None;
        }
        for i in 0..np {
            if locked[i] {
                // SAFETY: locked in step 3, so it still has our I_FLUSHING
                // (this clears it) and is alive.
                unsafe { &*picked[i] }.clear(I_FLUSHING);
            }
        }
        res.map(|()| count)
    }

    /// Flushes the cluster holding `ino` as reclaim does under the
    /// `broken` policy: neighbours locked with the policy's cluster mode
    /// (blocking under `broken`), every present neighbour when
    /// `reclaim_flushes_referenced`.
    pub(crate) fn flush_cluster_of(
        &self,
        ino: u32,
        held: Option<(&XfsInode, &InodeCore)>,
        gfp: Gfp,
    ) -> Result<u32, FsError> {
        let mode = self.policy.cluster_ilock;
        self.flush_cluster(
            ino_to_ag(ino),
            ino_to_agino(ino) / INODES_PER_CLUSTER,
            mode,
            mode,
            self.policy.reclaim_flushes_referenced,
            held,
            gfp,
        )
    }

    /// Reclaim's cluster flush entered directly, as direct reclaim would
    /// enter it from an allocation (inside `fs_reclaim`, with PF_MEMALLOC),
    /// on the cluster holding `ino`. This is the path that makes `broken`
    /// deadlock: it takes the cluster's ILOCKs, referenced inodes' too, with
    /// blocking locks. For tests that force the interleaving.
    pub fn reclaim_flush_cluster(&self, ino: u32) -> Result<u32, FsError> {
        self.sb.geometry.check_ino(ino)?;
        let _fs = FsReclaimGuard::new(GFP_KERNEL);
        let _memalloc = MemallocScope::noreclaim();
        self.flush_cluster_of(ino, None, GFP_KERNEL)
    }

    /// Whether any inode of the cluster is dirty and free to flush.
    fn cluster_wants_flush(&self, ag: u32, cluster: u32) -> bool {
        let ici = self.perags[ag as usize].ici.lock();
        let base = (cluster * INODES_PER_CLUSTER) as usize;
        ici.slots[base..base + N].iter().any(|&p| {
            !p.is_null() && {
                // SAFETY: a non-null slot of the AG index, read under the AG
                // lock: reclaim unindexes an inode under that lock before
                // freeing it, so it is alive.
                let ip = unsafe { &*p };
                let f = ip.flags();
                f & I_DIRTY != 0 && f & (I_FLUSHING | I_RECLAIM) == 0 && !self.ipinned(ip)
            }
        })
    }

    /// One pass over every cluster with dirty inodes. Returns the number of
    /// cores written and the first error.
    pub(crate) fn flush_dirty(&self, first: IlockMode, repeat: bool) -> (u64, Option<FsError>) {
        let geo = self.sb.geometry;
        let mut written = 0;
        let mut first_err = None;
        for ag in 0..geo.ag_count {
            for c in 0..geo.clusters_per_ag {
                let mut rounds = 0;
                while self.cluster_wants_flush(ag, c) && rounds < 2 * N {
                    rounds += 1;
                    match self.flush_cluster(
                        ag,
                        c,
                        first,
                        self.policy.cluster_ilock,
                        false,
                        None,
                        self.policy.gfp_under_ilock,
                    ) {
                        Ok(n) => {
                            written += u64::from(n);
                            if n == 0 || !repeat {
                                break;
                            }
                        }
                        Err(e) => {
                            first_err.get_or_insert(e);
                            break;
                        }
                    }
                }
            }
        }
        (written, first_err)
    }

    /// Writes back every dirty inode now, waiting for busy ILOCKs; the
    /// first error is returned (the inodes it concerns stay dirty).
    pub(crate) fn sync_inner(&self) -> Result<(), FsError> {
        for _ in 0..1000 {
            // Unpin what was committed so far: pinned cores are not written.
            self.log_force_all();
            let (_, err) = self.flush_dirty(IlockMode::Blocking, true);
            if let Some(e) = err {
                return Err(e);
            }
            if self.stats.dirty.load(Ordering::Acquire) == 0 {
                break;
            }
            // Others are flushing some (I_FLUSHING): let them finish.
            crate::task::sleep(Duration::from_millis(1));
        }
        self.device()
            .flush()
            .map_err(|err| FsError::Io { blk: 0, err })
    }

    /// Whether `ip` is pinned in the log (`xfs_ipincount(ip) > 0`).
    pub(crate) fn ipinned(&self, ip: &XfsInode) -> bool {
        self.log.is_pinned(ip.pin_seq.load(Ordering::Acquire))
    }

    /// `xfs_log_force(mp, XFS_LOG_SYNC)`: writes everything committed so
    /// far to the log and waits for it.
    pub(crate) fn log_force_all(&self) {
        let seq = self.log.last_seq();
        if let Some((_, done)) = self.log.force_seq(self.device(), seq) {
            self.device().wait_completion(done);
        }
    }

    pub(crate) fn kick_flusher(&self) {
        if !self.flush_kick.swap(true, Ordering::AcqRel) {
            self.flush_wait.wake_one();
        }
    }

    /// The flusher thread's body.
    pub(crate) fn flusher_main(self: Arc<Self>) {
        // A kernel daemon: reclaim may wait for its writeback, so direct
        // reclaim never throttles it.
        crate::task::current().set_flags(crate::task::TaskFlags::PF_KTHREAD);
        loop {
            self.flush_wait.wait_event_timeout(FLUSH_INTERVAL, || {
                self.flush_kick.load(Ordering::Acquire) || self.flush_stop.load(Ordering::Acquire)
            });
            if self.flush_stop.load(Ordering::Acquire) {
                break;
            }
            let kicked = self.flush_kick.swap(false, Ordering::AcqRel);
            if self.stats.dirty.load(Ordering::Acquire) == 0 {
                continue;
            }
            self.stats.flusher_runs.fetch_add(1, Ordering::Relaxed);
            if kicked {
                // Reclaim pushed the whole AIL (xfs_ail_push_all) and met
                // pinned items: xfsaild_push forces the log. The periodic
                // pass writes back what is unpinned only.
                self.log_force_all();
            }
            let (_, err) = self.flush_dirty(IlockMode::Trylock, false);
            if err.is_some() {
                // Back off after an IO error instead of retrying at once.
                crate::task::sleep(Duration::from_millis(100));
            }
        }
    }
}
