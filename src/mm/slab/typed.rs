//! `KmemCache<T>` in typed form: objects are RAII handles that drop their
//! value and return the memory to the cache.

use super::cache::{KmemCache, SlabFlags};
use crate::mm::gfp::Gfp;
use crate::mm::page_alloc::AllocError;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// A slab cache of `T`.
pub struct TypedCache<T> {
    cache: KmemCache,
    _t: PhantomData<T>,
}

impl<T> TypedCache<T> {
    /// Creates the cache, sized and aligned for `T`.
    pub fn new(name: &str, flags: SlabFlags) -> Result<Self, super::cache::CreateError> {
        let cache = KmemCache::create(
            name,
            core::mem::size_of::<T>().max(1),
            core::mem::align_of::<T>(),
            flags,
            None,
        )?;
        Ok(Self {
            cache,
            _t: PhantomData,
        })
    }

    /// Moves `value` into a new object.
    #[track_caller]
    pub fn alloc(&self, gfp: Gfp, value: T) -> Result<SlabBox<'_, T>, AllocError> {
        let p = self.cache.alloc(gfp)?.cast::<T>();
        // SAFETY: a fresh, suitably aligned object of size_of::<T>().
        unsafe { p.as_ptr().write(value) };
        Ok(SlabBox {
            ptr: p,
            cache: self,
        })
    }

    /// The underlying cache (for slabinfo, shrink, validate).
    pub fn cache(&self) -> &KmemCache {
        &self.cache
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
        // SAFETY: the box owns the object, allocated from this cache, and
        // it is being dropped: nothing can use the object afterwards.
        unsafe { self.cache.cache.free(self.ptr.cast()) };
    }
}
