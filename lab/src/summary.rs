//! DIR/summary.csv: one row per combination (and policy), with the number
//! of runs and, per figure, the mean, the standard deviation and the
//! half-width of the 95% confidence interval of the mean.

use std::path::Path;

use crate::data::{Dataset, Res};
use crate::stats::summarize;

/// A statistic as a CSV cell: empty when undefined (fewer than two runs).
fn cell(x: Option<f64>) -> String {
    x.map(|x| format!("{}", (x * 1e6).round() / 1e6))
        .unwrap_or_default()
}

/// Writes summary.csv for `data` to `path`.
pub fn write(data: &Dataset, path: &Path) -> Res<()> {
    let groups = data.groups();
    let figures = data.figure_names();
    let mut keys: Vec<String> = data.spec.sets.iter().map(|(k, _)| k.clone()).collect();
    if !keys.iter().any(|k| k == "policy") {
        keys.push("policy".into());
    }
    let mut w = csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut header: Vec<String> = keys.clone();
    header.extend(["runs", "failed", "n"].map(String::from));
    for f in &figures {
        for s in ["mean", "sd", "ci95"] {
            header.push(format!("{f}_{s}"));
        }
    }
    w.write_record(&header)?;
    for g in &groups {
        let failed = g
            .runs
            .iter()
            .filter(|&&ri| !data.runs[ri].meta.ok())
            .count();
        let mut row: Vec<String> = keys
            .iter()
            .map(|k| g.get(k).unwrap_or_default().to_string())
            .collect();
        row.push(g.runs.len().to_string());
        row.push(failed.to_string());
        row.push(g.results.len().to_string());
        for f in &figures {
            let s = summarize(&g.values(f));
            row.push(cell(s.map(|s| s.mean)));
            row.push(cell(s.and_then(|s| s.sd)));
            row.push(cell(s.and_then(|s| s.ci95)));
        }
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}
