//! `list_lru` (Linux's `mm/list_lru.c`): the LRU framework that caches
//! behind a shrinker keep their unused objects on.
//!
//! A [`ListLru`] has one list per memory node ([`MAX_NUMNODES`]; kreclaim
//! has a single node, but the type keeps the dimension so that counts and
//! walks are per node as in Linux), each with its own spinlock and item
//! count. Items are intrusive: an object embeds a [`ListLruHead`] and
//! implements [`ListLruItem`], so adding and removing never allocate (the
//! lists are used from reclaim).
//!
//! - [`ListLru::add`] / [`ListLru::del`] (`list_lru_add` / `list_lru_del`)
//!   return whether they changed anything: adding an item already on the
//!   list, or deleting one that is not, does nothing and returns `false`
//!   (the inode LRU uses this to set its referenced bit).
//! - [`ListLru::count_one`] / [`ListLru::count`] read the counts without
//!   the lock (`list_lru_count_one` reads `nr_items` with `READ_ONCE`).
//! - [`ListLru::walk_one`] / [`ListLru::walk`] (`list_lru_walk_one`,
//!   `list_lru_walk`) visit items from the head (the oldest: `add` puts
//!   items at the tail) and call an isolate callback on each, with the
//!   list lock held, at most `nr_to_walk` times (every visit counts,
//!   retries too, so a walk cannot livelock). The callback answers with an
//!   [`LruStatus`]:
//!   - `Removed`: it took the item off the list ([`LruWalk::isolate`] or
//!     [`LruWalk::isolate_move`] onto a private [`LruDispose`] list);
//!   - `RemovedRetry`: removed, and the lock was dropped meanwhile
//!     ([`LruWalk::unlocked`]): the walk restarts from the head;
//!   - `Rotate`: the item moves to the tail (a second chance);
//!   - `Skip`: left where it is (busy: its own lock could not be taken);
//!   - `Retry`: the lock was dropped, the item was not removed: restart;
//!   - `Stop`: end the walk now.
//!
//!   The walk returns the number of items removed. A callback that breaks
//!   the contract (answers `Removed` for an item still on the list, or
//!   drops the lock and answers `Rotate`/`Skip`/`Removed`) is reported and
//!   counted ([`ListLru::violations`]); the walk then restarts instead of
//!   following a stale pointer (Linux would corrupt the list or BUG).
//!
//! Lock order: a cache's own locks may be held while calling `add`/`del`
//! (they take the list lock inside them), so an isolate callback, which runs
//! under the list lock, must only *try* to take those locks and answer
//! `Skip` when it cannot (Linux: "we are inverting the lru lock/inode->i_lock
//! here, so use a trylock").

use crate::sync::SpinLock;
use crate::sync::lockdep::LockClassKey;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

/// Memory nodes a [`ListLru`] keeps lists for (kreclaim has one node).
pub const MAX_NUMNODES: usize = 1;

/// The node an object's memory belongs to (Linux: `page_to_nid` of its
/// page). One node: always 0.
pub fn item_nid<T>(_item: NonNull<T>) -> usize {
    0
}

/// What an isolate callback did with an item (Linux's `enum lru_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LruStatus {
    /// `LRU_REMOVED`: the item was taken off the list.
    Removed,
    /// `LRU_REMOVED_RETRY`: taken off, and the lock was dropped and
    /// retaken: the walk restarts.
    RemovedRetry,
    /// `LRU_ROTATE`: move the item to the tail.
    Rotate,
    /// `LRU_SKIP`: leave the item where it is.
    Skip,
    /// `LRU_RETRY`: the lock was dropped (item not removed): restart.
    Retry,
    /// `LRU_STOP`: end the walk.
    Stop,
}

struct Links<T> {
    prev: *mut T,
    next: *mut T,
    on_list: bool,
}

/// The list links an object embeds (Linux's `struct list_head` member,
/// e.g. `inode->i_lru`). Only the list it is on changes it, under that
/// list's lock, or the walker that isolated it onto a private list.
pub struct ListLruHead<T> {
    links: UnsafeCell<Links<T>>,
}

impl<T> ListLruHead<T> {
    /// Links of an object on no list.
    pub const fn new() -> Self {
        Self {
            links: UnsafeCell::new(Links {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                on_list: false,
            }),
        }
    }
}

impl<T> Default for ListLruHead<T> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: the links are only read or written under the lock of the list
// the item is on (or by the sole owner of a private dispose list).
unsafe impl<T> Send for ListLruHead<T> {}
// SAFETY: as above: every access is serialised by a list lock or exclusive
// ownership, so sharing `&ListLruHead` between tasks is sound.
unsafe impl<T> Sync for ListLruHead<T> {}

/// An object that can be put on a [`ListLru`].
///
/// # Safety
/// `lru_head` must return the same embedded head every time for a given
/// object, and that head must be used with no other list type.
pub unsafe trait ListLruItem: Sized {
    /// The embedded links.
    fn lru_head(&self) -> &ListLruHead<Self>;
}

/// The links of `item`.
///
/// # Safety
/// `item` must be live, and the caller must hold the lock of the list it is
/// on (or own it privately) for as long as it uses the result, with no
/// other reference to those links in use.
unsafe fn links<'a, T: ListLruItem>(item: *mut T) -> &'a mut Links<T> {
    // SAFETY: live per the contract; the lock (or private ownership) makes
    // this the only reference to the links in use.
    unsafe { &mut *(*item).lru_head().links.get() }
}

/// One node's list (`struct list_lru_one`): oldest at the head.
pub struct ListLruOne<T> {
    head: *mut T,
    tail: *mut T,
    nr_items: u64,
}

// SAFETY: the pointers are only followed under the node's lock.
unsafe impl<T> Send for ListLruOne<T> {}

impl<T: ListLruItem> ListLruOne<T> {
    /// Appends `item` (not on any list) at the tail.
    ///
    /// # Safety
    /// `item` is live and on no list; the caller holds this list's lock.
    unsafe fn push_tail(&mut self, item: *mut T) {
        // SAFETY: per the contract.
        let l = unsafe { links(item) };
        l.prev = self.tail;
        l.next = ptr::null_mut();
        l.on_list = true;
        if self.tail.is_null() {
            self.head = item;
        } else {
            // SAFETY: the tail is live and on this list, distinct from `item`.
            unsafe { links(self.tail) }.next = item;
        }
        self.tail = item;
        self.nr_items += 1;
    }

    /// Unlinks `item`, which is on this list.
    ///
    /// # Safety
    /// `item` is live and on this list; the caller holds its lock.
    unsafe fn unlink(&mut self, item: *mut T) {
        // SAFETY: per the contract.
        let l = unsafe { links(item) };
        let (prev, next) = (l.prev, l.next);
        l.prev = ptr::null_mut();
        l.next = ptr::null_mut();
        l.on_list = false;
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: neighbours on the list are live and distinct from `item`.
            unsafe { links(prev) }.next = next;
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { links(next) }.prev = prev;
        }
        self.nr_items -= 1;
    }
}

/// One node: its list, lock and lockless count (`struct list_lru_node`).
struct ListLruNode<T> {
    lock: SpinLock<ListLruOne<T>>,
    nr_items: AtomicU64,
}

/// A per-node LRU of intrusive items (`struct list_lru`).
pub struct ListLru<T> {
    nodes: [ListLruNode<T>; MAX_NUMNODES],
    violations: AtomicU64,
}

// SAFETY: every list is behind its node's lock; items are only reached
// through it (or privately, after isolation).
unsafe impl<T> Send for ListLru<T> {}
// SAFETY: as above, so `&ListLru` may be shared between tasks.
unsafe impl<T> Sync for ListLru<T> {}

/// A private list of isolated items (the `dispose` list of
/// `list_lru_isolate_move`): the walker owns them.
pub struct LruDispose<T> {
    head: *mut T,
    len: u64,
    _items: PhantomData<T>,
}

impl<T: ListLruItem> LruDispose<T> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            len: 0,
            _items: PhantomData,
        }
    }

    /// Items on the list.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the most recently moved item off the list.
    pub fn pop(&mut self) -> Option<NonNull<T>> {
        let item = NonNull::new(self.head)?;
        // SAFETY: items on a dispose list are live and owned by its owner
        // (`&mut self`), so nobody else touches their links.
        let l = unsafe { links(item.as_ptr()) };
        self.head = l.next;
        l.next = ptr::null_mut();
        self.len -= 1;
        Some(item)
    }
}

impl<T: ListLruItem> Default for LruDispose<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The state an isolate callback gets: the locked list, and what it may do
/// to the item it was called for.
pub struct LruWalk<'a, T: ListLruItem> {
    node: &'a ListLruNode<T>,
    guard: Option<crate::sync::SpinLockGuard<'a, ListLruOne<T>>>,
    dropped: bool,
    /// The item the callback was called for: the only one it may isolate.
    cur: *mut T,
    /// Isolation requests for another item (refused, reported by the walk).
    foreign: bool,
}

impl<T: ListLruItem> LruWalk<'_, T> {
    fn list(&mut self) -> &mut ListLruOne<T> {
        self.guard
            .as_deref_mut()
            .expect("list_lru: the walk's lock is held outside `unlocked`")
    }

    fn sync_count(&mut self) {
        let n = self.list().nr_items;
        self.node.nr_items.store(n, Ordering::Relaxed);
    }

    /// `list_lru_isolate`: takes `item`, the one the callback was called
    /// for, off the list; the caller now owns it. Any other item is refused
    /// (and reported as a contract break), as is one that left the list
    /// while the lock was dropped.
    pub fn isolate(&mut self, item: NonNull<T>) {
        self.take(item);
    }

    /// [`isolate`](Self::isolate); whether the item was taken off.
    fn take(&mut self, item: NonNull<T>) -> bool {
        if item.as_ptr() != self.cur {
            self.foreign = true;
            return false;
        }
        // SAFETY: `item` is the walk's current item: live (the callback
        // keeps it so, also across `unlocked`), and `self` holds the list
        // lock, which guards the links of items on the list.
        if !unsafe { links(item.as_ptr()) }.on_list {
            return false;
        }
        // SAFETY: as above, and it is on this list.
        unsafe { self.list().unlink(item.as_ptr()) };
        self.sync_count();
        true
    }

    /// `list_lru_isolate_move`: takes `item` off the list onto `dispose`.
    pub fn isolate_move(&mut self, item: NonNull<T>, dispose: &mut LruDispose<T>) {
        if !self.take(item) {
            return;
        }
        // SAFETY: just unlinked: private to this walker, live.
        let l = unsafe { links(item.as_ptr()) };
        l.next = dispose.head;
        dispose.head = item.as_ptr();
        dispose.len += 1;
    }

    /// Runs `f` with the list lock dropped (the callback must then answer
    /// `Retry` or `RemovedRetry`: the walk's position is stale). The item
    /// the callback was called for may be removed or freed by others
    /// meanwhile unless the callback holds it some other way.
    pub fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.guard = None;
        self.dropped = true;
        let r = f();
        self.guard = Some(self.node.lock.lock());
        r
    }
}

impl<T: ListLruItem> ListLru<T> {
    /// An empty LRU whose per-node locks are of lockdep class `class`.
    pub fn new(class: &'static LockClassKey) -> Self {
        Self {
            nodes: core::array::from_fn(|_| ListLruNode {
                lock: SpinLock::new(
                    ListLruOne {
                        head: ptr::null_mut(),
                        tail: ptr::null_mut(),
                        nr_items: 0,
                    },
                    class,
                ),
                nr_items: AtomicU64::new(0),
            }),
            violations: AtomicU64::new(0),
        }
    }

    /// `list_lru_add`: puts `item` at the tail of its node's list. `false`
    /// if it already was on the list (nothing changes).
    ///
    /// # Safety
    /// `item` must stay live until it is taken off again (by
    /// [`del`](Self::del) or a walk), and must never be on another list.
    pub unsafe fn add(&self, item: NonNull<T>) -> bool {
        let node = &self.nodes[item_nid(item)];
        let mut l = node.lock.lock();
        // SAFETY: live per the contract; the lock guards the links of items
        // on this list, and an item off every list is only touched by
        // add/del under this same lock.
        if unsafe { links(item.as_ptr()) }.on_list {
            return false;
        }
        // SAFETY: live, on no list, lock held.
        unsafe { l.push_tail(item.as_ptr()) };
        node.nr_items.store(l.nr_items, Ordering::Relaxed);
        true
    }

    /// `list_lru_del`: takes `item` off its node's list. `false` if it was
    /// not on it.
    ///
    /// # Safety
    /// `item` must be live and never on another list.
    pub unsafe fn del(&self, item: NonNull<T>) -> bool {
        let node = &self.nodes[item_nid(item)];
        let mut l = node.lock.lock();
        // SAFETY: as in `add`.
        if !unsafe { links(item.as_ptr()) }.on_list {
            return false;
        }
        // SAFETY: live, on this list, lock held.
        unsafe { l.unlink(item.as_ptr()) };
        node.nr_items.store(l.nr_items, Ordering::Relaxed);
        true
    }

    /// `list_lru_count_one`: items on node `nid`'s list (no lock).
    pub fn count_one(&self, nid: usize) -> u64 {
        self.nodes
            .get(nid)
            .map_or(0, |n| n.nr_items.load(Ordering::Relaxed))
    }

    /// `list_lru_count`: items on every node's list.
    pub fn count(&self) -> u64 {
        (0..MAX_NUMNODES).map(|nid| self.count_one(nid)).sum()
    }

    /// Isolate callbacks that broke the contract (see the module docs).
    pub fn violations(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }

    fn violation(&self, what: core::fmt::Arguments) {
        if self.violations.fetch_add(1, Ordering::Relaxed) == 0 {
            log::warn!(
                "list_lru: isolate callback broke the contract: {what}; restarting the walk"
            );
        }
    }

    /// `list_lru_walk_one`: walks node `nid`'s list from the head, calling
    /// `isolate` on at most `*nr_to_walk` items (decremented per visit).
    /// Returns the number of items removed.
    pub fn walk_one<F>(&self, nid: usize, isolate: &mut F, nr_to_walk: &mut u64) -> u64
    where
        F: FnMut(NonNull<T>, &mut LruWalk<'_, T>) -> LruStatus,
    {
        let Some(node) = self.nodes.get(nid) else {
            return 0;
        };
        let mut w = LruWalk {
            node,
            guard: Some(node.lock.lock()),
            dropped: false,
            cur: ptr::null_mut(),
            foreign: false,
        };
        let mut isolated = 0;
        'restart: loop {
            let mut cur = w.list().head;
            while !cur.is_null() {
                // Count the visit first, so retries cannot livelock.
                if *nr_to_walk == 0 {
                    break 'restart;
                }
                *nr_to_walk -= 1;
                // SAFETY: `cur` is on the list (live) and the lock is held;
                // the callback may only unlink `cur` itself, so `next` stays
                // valid unless the lock is dropped (checked below).
                let next = unsafe { links(cur) }.next;
                // SAFETY: `cur` came from the list, so it is non-null (checked).
                let item = unsafe { NonNull::new_unchecked(cur) };
                w.dropped = false;
                w.cur = cur;
                let ret = isolate(item, &mut w);
                let dropped = w.dropped;
                if core::mem::take(&mut w.foreign) {
                    self.violation(format_args!("isolated an item it was not called for"));
                }
                match ret {
                    LruStatus::Removed | LruStatus::RemovedRetry => {
                        isolated += 1;
                        if ret == LruStatus::Removed && dropped {
                            self.violation(format_args!("Removed after dropping the lock"));
                            continue 'restart;
                        }
                        if ret == LruStatus::RemovedRetry {
                            continue 'restart;
                        }
                        // Not `dropped`: the lock was held throughout and
                        // the callback may only have unlinked `cur` itself.
                        // SAFETY: `cur` is live (the callback owns it now).
                        if unsafe { links(cur) }.on_list {
                            isolated -= 1;
                            self.violation(format_args!("Removed an item still on the list"));
                            continue 'restart;
                        }
                    }
                    LruStatus::Rotate | LruStatus::Skip if dropped => {
                        self.violation(format_args!("{ret:?} after dropping the lock"));
                        continue 'restart;
                    }
                    LruStatus::Rotate => {
                        // SAFETY: `cur` is on the list, live, lock held.
                        unsafe {
                            let l = w.list();
                            l.unlink(cur);
                            l.push_tail(cur);
                        }
                    }
                    LruStatus::Skip => {}
                    LruStatus::Retry => continue 'restart,
                    LruStatus::Stop => break 'restart,
                }
                cur = next;
            }
            break;
        }
        isolated
    }

    /// `list_lru_walk`: [`walk_one`](Self::walk_one) over every node until
    /// `nr_to_walk` visits are used. Returns the number of items removed.
    pub fn walk<F>(&self, mut isolate: F, nr_to_walk: u64) -> u64
    where
        F: FnMut(NonNull<T>, &mut LruWalk<'_, T>) -> LruStatus,
    {
        let mut left = nr_to_walk;
        let mut isolated = 0;
        for nid in 0..MAX_NUMNODES {
            if left == 0 {
                break;
            }
            isolated += self.walk_one(nid, &mut isolate, &mut left);
        }
        isolated
    }

    /// `list_lru_shrink_count`: the count for a shrinker call (node 0: a
    /// shrink control has no node here, there is one).
    pub fn shrink_count(&self) -> u64 {
        self.count_one(0)
    }

    /// `list_lru_shrink_walk`: walks node 0 for a shrinker call, at most
    /// `nr_to_scan` items.
    pub fn shrink_walk<F>(&self, mut isolate: F, nr_to_scan: u64) -> u64
    where
        F: FnMut(NonNull<T>, &mut LruWalk<'_, T>) -> LruStatus,
    {
        let mut left = nr_to_scan;
        self.walk_one(0, &mut isolate, &mut left)
    }
}
