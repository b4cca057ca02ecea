//! `KmemCache<T>` in typed form: objects are RAII handles that drop their
//! value and return the memory to the cache.

use super::cache::{CreateError, KmemCache, SlabFlags};
use crate::mm::gfp::Gfp;
use crate::mm::page_alloc::AllocError;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// A slab cache of `T`: created at once with [`TypedCache::new`], or
/// declared in a `static` with the `const` [`TypedCache::new_static`] and
/// created at init with [`TypedCache::create`].
pub struct TypedCache<T> {
    cache: spin::Once<KmemCache>,
    /// Name and flags for [`TypedCache::create`].
    name: &'static str,
    flags: SlabFlags,
    _t: PhantomData<T>,
}

impl<T> TypedCache<T> {
    /// Creates the cache, sized and aligned for `T`.
    pub fn new(name: &'static str, flags: SlabFlags) -> Result<Self, CreateError> {
        Ok(Self {
            cache: spin::Once::initialized(Self::create_cache(name, flags)?),
            name,
            flags,
            _t: PhantomData,
        })
    }

    /// A cache for a `static`, created later by [`TypedCache::create`]
    /// (cache creation allocates, so it cannot happen at compile time).
    pub const fn new_static(name: &'static str, flags: SlabFlags) -> Self {
        Self {
            cache: spin::Once::new(),
            name,
            flags,
            _t: PhantomData,
        }
    }

    /// Creates a [`TypedCache::new_static`] cache; once created, later calls
    /// succeed without doing anything.
    pub fn create(&self) -> Result<(), CreateError> {
        self.cache
            .try_call_once(|| Self::create_cache(self.name, self.flags))
            .map(|_| ())
    }

    fn create_cache(name: &'static str, flags: SlabFlags) -> Result<KmemCache, CreateError> {
        KmemCache::create(
            name,
            core::mem::size_of::<T>().max(1),
            core::mem::align_of::<T>(),
            flags,
            None,
        )
    }

    /// Moves `value` into a new object. On a `new_static` cache not yet
    /// created this is a bug, reported with the cache's name, and an error.
    #[track_caller]
    pub fn alloc(&self, gfp: Gfp, value: T) -> Result<SlabBox<'_, T>, AllocError> {
        let Some(cache) = self.cache.get() else {
            crate::println!(
                "BUG TypedCache: '{}' used before TypedCache::create (caller {})",
                self.name,
                core::panic::Location::caller()
            );
            return Err(AllocError { gfp, order: 0 });
        };
        let p = cache.alloc(gfp)?.cast::<T>();
        // SAFETY: a fresh, suitably aligned object of size_of::<T>().
        unsafe { p.as_ptr().write(value) };
        Ok(SlabBox {
            ptr: p,
            cache: self,
        })
    }

    /// The underlying cache (for slabinfo, shrink, validate); `None` for a
    /// `new_static` cache not yet created.
    pub fn cache(&self) -> Option<&KmemCache> {
        self.cache.get()
    }
}

/// An object of a [`TypedCache`]; dropping it frees it.
pub struct SlabBox<'a, T> {
    ptr: NonNull<T>,
    cache: &'a TypedCache<T>,
}

// SAFETY: owns its T like a Box.
unsafe impl<T: Send> Send for SlabBox<'_, T> {}
// SAFETY: shared references to a SlabBox only give `&T`, so sharing it across tasks is sharing
// `&T`, which `T: Sync` allows.
unsafe impl<T: Sync> Sync for SlabBox<'_, T> {}

impl<T> SlabBox<'_, T> {
    /// The object's address.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Deref for SlabBox<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in alloc, owned by us.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for SlabBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: initialised in alloc and owned by this box; `&mut self` makes this the only
        // reference.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for SlabBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: we own the value.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        if let Some(cache) = self.cache.cache() {
            // SAFETY: the box owns the object, allocated from this cache
            // (which exists: the box came from it), and it is being
            // dropped: nothing can use the object afterwards.
            unsafe { cache.free(self.ptr.cast()) };
        }
    }
}
