//! The kernel test harness: every file in `kernel_tests/` is a test kernel
//! that lists its cases with [`kernel_tests!`](crate::kernel_tests).
//!
//! Output follows libtest: `test NAME ... ok` / `test NAME ... FAILED` (with
//! the message and source location), then `N passed, N failed` alone on a
//! line. Bare words on the command line (`cargo test -- NAME`) select cases
//! by substring; `key=value` tokens configure the kernel as usual. Any failed
//! case, panic or CPU exception makes the test kernel exit with failure.

#![deny(missing_docs)]

use alloc::string::String;
use core::fmt;
use core::panic::Location;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A failed check: what and where.
#[derive(Debug)]
pub struct TestFailure {
    /// What failed.
    pub message: String,
    /// Where the check is.
    pub location: &'static Location<'static>,
}

impl TestFailure {
    /// A failure with `message` at the caller's location.
    #[track_caller]
    pub fn new(message: String) -> Self {
        Self {
            message,
            location: Location::caller(),
        }
    }
}

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.location, self.message)
    }
}

/// A test case's outcome.
pub type TestResult = Result<(), TestFailure>;

/// Turns a set-up step's `Err` or `None` into a failed case, located at the
/// caller, instead of an `unwrap` panic, which would end the whole test
/// kernel and skip the cases after it:
/// `let cache = KmemCache::create(..).or_fail("create the cache")?;`
pub trait OrFail<T> {
    /// `Ok` passes the value on; `Err` or `None` becomes a failure saying what was being done.
    #[track_caller]
    fn or_fail(self, what: &str) -> Result<T, TestFailure>;
}

impl<T, E: fmt::Debug> OrFail<T> for Result<T, E> {
    #[track_caller]
    fn or_fail(self, what: &str) -> Result<T, TestFailure> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => Err(TestFailure::new(alloc::format!("{what}: {e:?}"))),
        }
    }
}

impl<T> OrFail<T> for Option<T> {
    #[track_caller]
    fn or_fail(self, what: &str) -> Result<T, TestFailure> {
        match self {
            Some(v) => Ok(v),
            None => Err(TestFailure::new(alloc::format!("{what}: None"))),
        }
    }
}

/// Waits until `cond` holds, sleeping 1 ms between checks; fails the case
/// with `what` if it never does. For what another task must do first:
/// waiting for the event, not for a fixed time, keeps a case right on a
/// loaded host, where the guest may get no CPU for a long while. The bound
/// (a minute of guest time) only ends a broken run.
#[track_caller]
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> TestResult {
    const LIMIT_NS: u64 = 60_000_000_000;
    let location = Location::caller();
    let t0 = crate::time::now_ns();
    while !cond() {
        if crate::time::now_ns() - t0 > LIMIT_NS {
            return Err(TestFailure {
                message: alloc::format!("still waiting after 60 s for {what}"),
                location,
            });
        }
        crate::task::sleep(core::time::Duration::from_millis(1));
    }
    Ok(())
}

/// One registered test case.
pub struct Test {
    /// The case's name, as printed in `test NAME ... ok`.
    pub name: &'static str,
    /// The case's body.
    pub run: fn() -> TestResult,
}

/// Fails the current test unless `cond` holds.
#[macro_export]
macro_rules! kassert {
    ($cond:expr $(,)?) => {
        if !$cond {
            return Err($crate::harness::TestFailure::new(
                alloc::format!("assertion failed: {}", stringify!($cond)),
            ));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::harness::TestFailure::new(
                alloc::format!("assertion failed: {}: {}", stringify!($cond), alloc::format!($($arg)+)),
            ));
        }
    };
}

/// Fails the current test unless `left == right`, showing both.
#[macro_export]
macro_rules! kassert_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (l, r) => {
                if !(*l == *r) {
                    return Err($crate::harness::TestFailure::new(alloc::format!(
                        "assertion `left == right` failed: {} == {}\n      left: {:?}\n     right: {:?}",
                        stringify!($left), stringify!($right), l, r
                    )));
                }
            }
        }
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if !(*l == *r) {
                    return Err($crate::harness::TestFailure::new(alloc::format!(
                        "assertion `left == right` failed: {}\n      left: {:?}\n     right: {:?}",
                        alloc::format!($($arg)+), l, r
                    )));
                }
            }
        }
    };
}

/// Declares the test kernel's entry point and its list of cases, one path per
/// case: `kernel_tests!(memmap_has_ram, cmdline_rejects_unknown_key);`
///
/// `kernel_tests!(cmdline = "mem=48M"; case_a, case_b)` builds a command line
/// into the test kernel (see [`entry_point!`](crate::entry_point)), for keys
/// that act at boot, since `cargo test` passes no kernel arguments.
#[macro_export]
macro_rules! kernel_tests {
    (cmdline = $cmdline:expr; $($test:path),* $(,)?) => {
        $crate::entry_point!(__kreclaim_test_main, cmdline = $cmdline);
        fn __kreclaim_test_main(boot: &'static $crate::bootinfo::BootInfo) -> ! {
            $crate::harness::run(boot, &[
                $($crate::harness::Test { name: stringify!($test), run: $test }),*
            ])
        }
    };
    ($($test:path),* $(,)?) => {
        $crate::entry_point!(__kreclaim_test_main);
        fn __kreclaim_test_main(boot: &'static $crate::bootinfo::BootInfo) -> ! {
            $crate::harness::run(boot, &[
                $($crate::harness::Test { name: stringify!($test), run: $test }),*
            ])
        }
    };
}

static PASSED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);
/// Name of the running case (a `&'static str` stored as pointer + length).
static CURRENT_PTR: AtomicUsize = AtomicUsize::new(0);
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);

/// The name of the test case running now, if a harness is running one.
pub fn current_test() -> Option<&'static str> {
    let p = CURRENT_PTR.load(Ordering::Acquire);
    if p == 0 {
        return None;
    }
    let len = CURRENT_LEN.load(Ordering::Acquire);
    // SAFETY: set from a `&'static str` in `run`.
    let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, len) };
    core::str::from_utf8(bytes).ok()
}

fn set_current(name: Option<&'static str>) {
    match name {
        Some(n) => {
            CURRENT_LEN.store(n.len(), Ordering::Release);
            CURRENT_PTR.store(n.as_ptr() as usize, Ordering::Release);
        }
        None => CURRENT_PTR.store(0, Ordering::Release),
    }
}

/// Splits the command line into test-name filters (bare words) and
/// configuration tokens: `key=value`, and anything starting with `-`, which
/// the configuration parser then refuses rather than have it dropped.
pub fn split_cmdline(cmdline: &str) -> (alloc::vec::Vec<&str>, String) {
    let mut filters = alloc::vec::Vec::new();
    let mut rest = String::new();
    for tok in cmdline.split_whitespace() {
        if tok.contains('=') || tok.starts_with('-') {
            rest.push_str(tok);
            rest.push(' ');
        } else {
            filters.push(tok);
        }
    }
    (filters, rest)
}

/// Puts the configuration tokens of a test kernel's command line into
/// effect (`config`, part of the `demo` feature); a bad token stops the
/// machine with one line naming it.
#[cfg(feature = "demo")]
fn apply_cmdline(tokens: &str) {
    crate::config::Config::from_cmdline_or_exit(tokens).apply();
}

/// Without the `demo` feature there is no command-line parser: a key is
/// refused (with one line saying why) rather than silently ignored.
#[cfg(not(feature = "demo"))]
fn apply_cmdline(tokens: &str) {
    if let Some(tok) = tokens.split_whitespace().next() {
        crate::println!(
            "kreclaim: cannot apply '{tok}': the command-line parser is part of the demo feature"
        );
        crate::platform::exit(false);
    }
}

/// Runs the selected cases and exits the machine with the verdict.
pub fn run(boot: &'static crate::bootinfo::BootInfo, tests: &[Test]) -> ! {
    let (filters, rest) = split_cmdline(boot.cmdline());
    apply_cmdline(&rest);
    let selected = tests
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f)));
    let total = selected.clone().count();
    crate::println!(
        "\nrunning {total} test{}",
        if total == 1 { "" } else { "s" }
    );
    for t in selected {
        set_current(Some(t.name));
        let result = (t.run)();
        set_current(None);
        match result {
            Ok(()) => {
                PASSED.fetch_add(1, Ordering::Relaxed);
                crate::println!("test {} ... ok", t.name);
            }
            Err(e) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                crate::println!("test {} ... FAILED\n    {e}", t.name);
            }
        }
    }
    let filtered = tests.len() - total;
    if filtered > 0 {
        crate::println!("{filtered} filtered out");
    }
    finish()
}

/// Prints the closing line and exits: success only if nothing failed.
pub fn finish() -> ! {
    let passed = PASSED.load(Ordering::Relaxed);
    let failed = FAILED.load(Ordering::Relaxed);
    crate::println!("{passed} passed, {failed} failed");
    crate::platform::exit(failed == 0)
}

/// For the panic and fault paths: if a case was running, reports it as
/// failed with `why`, prints the closing line and exits with failure.
pub fn abort_current(why: fmt::Arguments) -> ! {
    if let Some(name) = current_test() {
        FAILED.fetch_add(1, Ordering::Relaxed);
        crate::println!("test {name} ... FAILED\n    {why}");
        let passed = PASSED.load(Ordering::Relaxed);
        let failed = FAILED.load(Ordering::Relaxed);
        crate::println!("{passed} passed, {failed} failed");
    } else {
        crate::println!("{why}");
    }
    crate::platform::exit(false)
}

/// Marks one expected-outcome case as passed from outside `run` (used by
/// test kernels whose case ends in a fault that the hook checks).
pub fn pass_current_and_finish() -> ! {
    if let Some(name) = current_test() {
        PASSED.fetch_add(1, Ordering::Relaxed);
        crate::println!("test {name} ... ok");
        set_current(None);
    }
    finish()
}

/// Decides from a panic message whether the panic was the expected one.
pub type PanicCheck = fn(&str) -> bool;

/// The check a panic message must pass to end the running case as passed.
static EXPECTED_PANIC: spin::Mutex<Option<PanicCheck>> = spin::Mutex::new(None);

/// Makes a panic whose message passes `check` pass the running case (for a
/// case that must end in a panic, run with [`run_expecting_end`]).
pub fn expect_panic(check: PanicCheck) {
    crate::platform::without_interrupts(|| *EXPECTED_PANIC.lock() = Some(check));
}

/// For the panic handler: whether a panic was expected and `message` passes
/// its check. Formats into a fixed buffer: the panic path must not allocate.
pub fn panic_was_expected(message: &core::panic::PanicMessage) -> bool {
    // try_lock: the panic may have interrupted `expect_panic` itself.
    let Some(check) = EXPECTED_PANIC.try_lock().and_then(|c| *c) else {
        return false;
    };
    struct Buf {
        bytes: [u8; 512],
        len: usize,
    }
    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let n = s.len().min(self.bytes.len() - self.len);
            self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 512],
        len: 0,
    };
    let _ = fmt::Write::write_fmt(&mut buf, format_args!("{message}"));
    // A cut inside a multi-byte character drops that character.
    let text = match core::str::from_utf8(&buf.bytes[..buf.len]) {
        Ok(t) => t,
        Err(e) => core::str::from_utf8(&buf.bytes[..e.valid_up_to()]).unwrap_or(""),
    };
    check(text)
}

/// Runs one case that is expected to end the kernel (a fault or panic whose
/// hook calls [`pass_current_and_finish`] or [`abort_current`]); returning
/// from it is a failure.
pub fn run_expecting_end(
    boot: &'static crate::bootinfo::BootInfo,
    name: &'static str,
    f: fn(),
) -> ! {
    let (filters, rest) = split_cmdline(boot.cmdline());
    apply_cmdline(&rest);
    crate::println!("\nrunning 1 test");
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f)) {
        crate::println!("1 filtered out");
        finish();
    }
    set_current(Some(name));
    f();
    abort_current(format_args!(
        "the case returned instead of ending the kernel"
    ))
}
