//! The kernel command line: `key=value` tokens parsed into a typed [`Config`].
//!
//! Every key is described once in [`KEYS`]; an unknown key or a bad value is
//! an error naming the token and listing the valid keys.

use crate::bench::Format;
use crate::sync::lockdep::LockdepMode;
use crate::task::SchedMode;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `loglevel=off|error|warn|info|debug|trace` (default `info`).
    pub loglevel: log::LevelFilter,
    /// `sched=preempt|coop` (default `preempt`).
    pub sched: SchedMode,
    /// `lockdep=on|off|fatal` (default `on`).
    pub lockdep: LockdepMode,
    /// `bench=locks|mm`: run a benchmark instead of the workload.
    pub bench: Option<Bench>,
    /// `format=text|json` for reports and benchmarks.
    pub format: Format,
}

/// Which benchmark `bench=` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    Locks,
    Mm,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            loglevel: log::LevelFilter::Info,
            sched: SchedMode::Preemptive,
            lockdep: LockdepMode::On,
            bench: None,
            format: Format::Text,
        }
    }
}

/// One command-line key: its name, the values it takes, and its parser.
pub struct Key {
    pub name: &'static str,
    pub values: &'static str,
    pub help: &'static str,
    set: fn(&mut Config, &str) -> Result<(), ()>,
}

/// Every key the kernel understands.
pub static KEYS: &[Key] = &[
    Key {
        name: "loglevel",
        values: "off|error|warn|info|debug|trace",
        help: "most verbose log level printed",
        set: |c, v| {
            c.loglevel = match v {
                "off" => log::LevelFilter::Off,
                "error" => log::LevelFilter::Error,
                "warn" => log::LevelFilter::Warn,
                "info" => log::LevelFilter::Info,
                "debug" => log::LevelFilter::Debug,
                "trace" => log::LevelFilter::Trace,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "sched",
        values: "preempt|coop",
        help: "preemptive round-robin on the timer tick, or cooperative (deterministic replays)",
        set: |c, v| {
            c.sched = match v {
                "preempt" => SchedMode::Preemptive,
                "coop" => SchedMode::Cooperative,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "lockdep",
        values: "on|off|fatal",
        help: "lock validator: report, disabled, or report and fail the kernel",
        set: |c, v| {
            c.lockdep = match v {
                "on" => LockdepMode::On,
                "off" => LockdepMode::Off,
                "fatal" => LockdepMode::Fatal,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "bench",
        values: "locks|mm",
        help: "run a benchmark and exit",
        set: |c, v| {
            c.bench = Some(match v {
                "locks" => Bench::Locks,
                "mm" => Bench::Mm,
                _ => return Err(()),
            });
            Ok(())
        },
    },
    Key {
        name: "format",
        values: "text|json",
        help: "output format of reports and benchmarks",
        set: |c, v| {
            c.format = match v {
                "text" => Format::Text,
                "json" => Format::Json,
                _ => return Err(()),
            };
            Ok(())
        },
    },
];

/// Why a command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// `token` is not of the form `key=value`.
    NotKeyValue { token: String },
    /// `key` is not one of [`KEYS`].
    UnknownKey { token: String, key: String },
    /// `key` exists but `value` is not one it takes.
    BadValue {
        token: String,
        key: &'static str,
        expected: &'static str,
    },
}

fn valid_keys() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotKeyValue { token } => write!(
                f,
                "bad command-line token '{token}': expected key=value; valid keys: {}",
                valid_keys()
            ),
            Self::UnknownKey { token, key } => write!(
                f,
                "unknown command-line key '{key}' in '{token}'; valid keys: {}",
                valid_keys()
            ),
            Self::BadValue {
                token,
                key,
                expected,
            } => write!(
                f,
                "bad value in '{token}': {key} takes {expected}; valid keys: {}",
                valid_keys()
            ),
        }
    }
}

impl Config {
    /// Parses whitespace-separated `key=value` tokens; later tokens win.
    pub fn parse(cmdline: &str) -> Result<Config, CmdlineError> {
        let mut cfg = Config::default();
        for token in cmdline.split_whitespace() {
            cfg.apply_token(token)?;
        }
        Ok(cfg)
    }

    /// Applies one `key=value` token.
    pub fn apply_token(&mut self, token: &str) -> Result<(), CmdlineError> {
        let Some((key, value)) = token.split_once('=') else {
            return Err(CmdlineError::NotKeyValue {
                token: token.to_string(),
            });
        };
        let Some(k) = KEYS.iter().find(|k| k.name == key) else {
            return Err(CmdlineError::UnknownKey {
                token: token.to_string(),
                key: key.to_string(),
            });
        };
        (k.set)(self, value).map_err(|()| CmdlineError::BadValue {
            token: token.to_string(),
            key: k.name,
            expected: k.values,
        })
    }

    /// Puts the configuration into effect (log level, scheduler, lockdep).
    pub fn apply(&self) {
        crate::console::set_log_level(self.loglevel);
        crate::task::set_mode(self.sched);
        crate::sync::lockdep::set_mode(self.lockdep);
    }

    /// Parses the boot command line; on error prints one line and exits the
    /// machine with failure (no panic).
    pub fn from_cmdline_or_exit(cmdline: &str) -> Config {
        match Config::parse(cmdline) {
            Ok(c) => c,
            Err(e) => {
                crate::println!("kreclaim: {e}");
                crate::platform::exit(false)
            }
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loglevel={} sched={} lockdep={}",
            self.loglevel.as_str().to_ascii_lowercase(),
            match self.sched {
                SchedMode::Preemptive => "preempt",
                SchedMode::Cooperative => "coop",
            },
            match self.lockdep {
                LockdepMode::On => "on",
                LockdepMode::Off => "off",
                LockdepMode::Fatal => "fatal",
            }
        )
    }
}
