//! `cargo lab compare` (not yet).
use std::path::Path;
use std::process::ExitCode;

use crate::data::Res;

/// Compares two sweeps.
pub fn compare(_a: &Path, _b: &Path, _all: bool) -> Res<ExitCode> {
    Err("not yet".into())
}
