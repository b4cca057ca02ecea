//! DIR/report.html (not yet).
use std::path::Path;

use crate::data::{Dataset, Res};

/// Writes the report.
pub fn write(_data: &Dataset, _path: &Path) -> Res<()> {
    Ok(())
}

/// One figure's chart as SVG.
pub fn figure_svg(_data: &Dataset, _figure: &str) -> Res<String> {
    Err("not yet".into())
}
