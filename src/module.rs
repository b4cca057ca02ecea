//! Modules: the `module_init` / `module_exit` lifecycle through which a
//! subsystem creates its caches and registers its shrinkers, and later
//! releases them.
//!
//! A module is a value that owns its resources (a [`KmemCache`], a
//! [`ShrinkerRegistration`], ...). Loading runs `init`; unloading runs `exit`
//! and then drops the value, which unregisters shrinkers (waiting for scans
//! in flight on other tasks) and destroys caches (reporting live objects).
//! That ordering is what makes unloading safe while reclaim runs elsewhere.
//!
//! [`KmemCache`]: crate::mm::slab::KmemCache
//! [`ShrinkerRegistration`]: crate::mm::shrinker::ShrinkerRegistration

#![deny(missing_docs)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A loadable subsystem.
pub trait Module: Sized + Send + 'static {
    /// The name used in log lines and errors.
    const NAME: &'static str;
    /// `module_init`: create caches, register shrinkers.
    fn init() -> Result<Self, ModuleError>;
    /// `module_exit`: release what `init` set up that drop does not. The
    /// value is dropped afterwards either way.
    fn exit(&mut self) -> Result<(), ModuleError> {
        Ok(())
    }
}

/// Why loading or unloading failed, naming the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    /// The module's name.
    pub module: &'static str,
    /// What went wrong.
    pub reason: String,
}

impl ModuleError {
    /// Formats `reason` fallibly: a module failing for lack of memory must
    /// not abort the kernel while describing why. If even that fails, the
    /// reason is left empty and shown as "out of memory".
    pub fn new(module: &'static str, reason: impl fmt::Display) -> Self {
        Self {
            module,
            reason: crate::mm::global_alloc::try_format(format_args!("{reason}"))
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self.reason.as_str() {
            "" => "out of memory (describing the failure failed too)",
            r => r,
        };
        write!(f, "module {}: {reason}", self.module)
    }
}

static LOADED: spin::Mutex<Vec<&'static str>> = spin::Mutex::new(Vec::new());

/// Names of the loaded modules.
pub fn loaded_modules() -> Vec<&'static str> {
    crate::platform::without_interrupts(|| LOADED.lock().clone())
}

/// A loaded module; unloads on drop.
pub struct LoadedModule<M: Module> {
    module: Option<M>,
}

/// Loads `M`: runs its `init`.
pub fn module_load<M: Module>() -> Result<LoadedModule<M>, ModuleError> {
    // Looked up in place: a copy of the list could fail to allocate.
    if crate::platform::without_interrupts(|| LOADED.lock().contains(&M::NAME)) {
        return Err(ModuleError::new(M::NAME, "already loaded"));
    }
    let m = M::init()?;
    let listed = crate::platform::without_interrupts(|| {
        let mut loaded = LOADED.lock();
        loaded.try_reserve(1).map(|_| loaded.push(M::NAME))
    });
    if listed.is_err() {
        drop(m); // releases what init set up, like an unload
        return Err(ModuleError::new(
            M::NAME,
            "out of memory for the module list",
        ));
    }
    log::info!("module {} loaded", M::NAME);
    Ok(LoadedModule { module: Some(m) })
}

impl<M: Module> LoadedModule<M> {
    /// The loaded module.
    pub fn get(&self) -> &M {
        self.module.as_ref().expect("module already unloaded")
    }

    /// Unloads: `exit`, then drop of the module's resources.
    pub fn unload(mut self) -> Result<(), ModuleError> {
        self.unload_inner()
    }

    fn unload_inner(&mut self) -> Result<(), ModuleError> {
        let Some(mut m) = self.module.take() else {
            return Ok(());
        };
        let r = m.exit();
        drop(m);
        crate::platform::without_interrupts(|| LOADED.lock().retain(|n| *n != M::NAME));
        log::info!("module {} unloaded", M::NAME);
        r
    }
}

impl<M: Module> Drop for LoadedModule<M> {
    fn drop(&mut self) {
        if let Err(e) = self.unload_inner() {
            crate::println!("{e}");
        }
    }
}
