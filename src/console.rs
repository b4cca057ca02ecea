//! Kernel console: `print!`/`println!` and the `log` backend.
//!
//! The console writes through the platform (COM1 on QEMU). Its lock is
//! taken with interrupts masked, and fault/panic paths may steal it with
//! [`force_unlock`] so that a crash while printing still gets reported.

#![deny(missing_docs)]

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};

/// Serialises whole `print!` calls so lines from different tasks do not mix.
static CONSOLE_LOCK: spin::Mutex<()> = spin::Mutex::new(());

struct PlatformWriter(&'static dyn crate::platform::Platform);

impl Write for PlatformWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.console_write(s);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let Some(p) = crate::platform::get() else {
        return;
    };
    crate::platform::without_interrupts(|| {
        let _guard = CONSOLE_LOCK.lock();
        let _ = PlatformWriter(p).write_fmt(args);
    });
}

/// Serialises whole lines of machine-readable output ([`data_line`]).
/// Separate from the console's lock: a line being written may log.
static DATA_LOCK: spin::Mutex<()> = spin::Mutex::new(());

struct DataWriter(&'static dyn crate::platform::Platform);

impl Write for DataWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.data_write(s);
        Ok(())
    }
}

/// Writes one line of machine-readable output (a JSON object) to the
/// platform's data stream: `f` writes the line, this adds the `\n`. Lines
/// from different tasks never mix. On QEMU with `format=json` that stream
/// is COM1 (standard output) and the console is on COM2 (standard error).
pub fn data_line(f: impl FnOnce(&mut dyn Write) -> fmt::Result) {
    let Some(p) = crate::platform::get() else {
        return;
    };
    crate::platform::without_interrupts(|| {
        let _guard = DATA_LOCK.lock();
        let mut w = DataWriter(p);
        let _ = f(&mut w);
        w.0.data_write("\n");
    });
}

/// Releases the console lock held by whoever crashed while printing.
///
/// # Safety
/// Only on a path that never returns to the interrupted code (fault, panic).
pub unsafe fn force_unlock() {
    if CONSOLE_LOCK.is_locked() {
        // SAFETY: the caller guarantees the holder will never run again.
        unsafe { CONSOLE_LOCK.force_unlock() };
    }
}

/// Prints to the console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(log::LevelFilter::Info as u8);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let ms = crate::time::now_ns() / 1_000_000;
            crate::println!(
                "[{:>5}.{:03}] {:<5} {}",
                ms / 1000,
                ms % 1000,
                record.level(),
                record.args()
            );
            if let Some(f) = OBSERVER.get() {
                f(record);
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// A function that sees every record the console prints.
static OBSERVER: crate::sync::Hook<fn(&log::Record)> = crate::sync::Hook::new();

/// Calls `f` with every record printed from now on (`None`: stop), so that
/// test kernels can check which decisions were logged. `f` runs wherever
/// the record was logged (reclaim, allocator slow path): it must not log,
/// sleep or allocate.
pub fn set_log_observer(f: Option<fn(&log::Record)>) {
    OBSERVER.set(f);
}

/// Makes the console the `log` backend at `level`.
pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    set_log_level(level);
}

/// Changes the maximum level printed. `log::set_max_level` too, so that a
/// disabled `log::debug!` costs one load and compare at its call site.
pub fn set_log_level(level: log::LevelFilter) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
    log::set_max_level(level);
}
