//! `cargo lab compare DIR_A DIR_B`: per figure, the means of both sweeps
//! per combination, the change in %, and whether it is significant
//! (Welch's t-test, two-sided, 95%), laid out like mmtests'
//! compare-kernels: `Amean <combination> A (0.00%) B * change%*`, the stars
//! marking a significant change.

use std::path::Path;
use std::process::ExitCode;

use crate::data::{Dataset, Group, Res, fmt_num};
use crate::stats::{summarize, welch};

/// How a pair of value sets compares.
struct Row {
    combo: String,
    a: Option<f64>,
    b: Option<f64>,
    change: String,
    significant: bool,
    note: String,
}

/// `(b - a) / a` in %, as compare-kernels prints it.
fn change(a: f64, b: f64) -> String {
    if a == b {
        "0.00%".into()
    } else if a == 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}%", (b - a) / a.abs() * 100.0)
    }
}

/// Compares the values of one figure in a pair of groups.
fn row(combo: String, va: &[f64], vb: &[f64]) -> Row {
    let (sa, sb) = (summarize(va), summarize(vb));
    let (a, b) = (sa.map(|s| s.mean), sb.map(|s| s.mean));
    let (significant, note) = match (a, b) {
        (Some(ma), Some(mb)) => match welch(va, vb) {
            Some(w) => (
                w.significant(),
                format!("p={:.3} n={}/{}", w.p, va.len(), vb.len()),
            ),
            None if va.len() >= 2 && vb.len() >= 2 => {
                (ma != mb, format!("no variance n={}/{}", va.len(), vb.len()))
            }
            None => (false, format!("too few runs n={}/{}", va.len(), vb.len())),
        },
        _ => (false, "missing on one side".into()),
    };
    let change = match (a, b) {
        (Some(a), Some(b)) => change(a, b),
        _ => "-".into(),
    };
    Row {
        combo,
        a,
        b,
        change,
        significant,
        note,
    }
}

/// The groups of `a` and `b` paired: by their settings and policy, or in
/// order when no pair matches and both have as many groups (comparing,
/// say, a sweep of policy=nofs with one of policy=today).
fn pairs<'a>(ga: &'a [Group], gb: &'a [Group]) -> (Vec<(String, &'a Group, &'a Group)>, bool) {
    let mut out = Vec::new();
    for a in ga {
        if let Some(b) = gb
            .iter()
            .find(|b| b.settings == a.settings && b.policy == a.policy)
        {
            out.push((a.label(), a, b));
        }
    }
    if out.is_empty() && ga.len() == gb.len() {
        let out = ga
            .iter()
            .zip(gb)
            .map(|(a, b)| (format!("{} | {}", a.label(), b.label()), a, b))
            .collect();
        return (out, true);
    }
    (out, false)
}

/// The comparison as text.
pub fn render(a: &Dataset, b: &Dataset, name_a: &str, name_b: &str, all: bool) -> Res<String> {
    let (ga, gb) = (a.groups(), b.groups());
    let (pairs, by_order) = pairs(&ga, &gb);
    if pairs.is_empty() {
        return Err(
            "the two sweeps have no combination in common (same settings and policy)".into(),
        );
    }
    let mut figures = a.figure_names();
    for f in b.figure_names() {
        if !figures.contains(&f) {
            figures.push(f);
        }
    }
    let mut out = String::new();
    out.push_str(&format!("A = {name_a}\nB = {name_b}\n"));
    if by_order {
        out.push_str("No combination is in both sweeps: paired in order (A's | B's).\n");
    }
    out.push_str(
        "Amean: mean over the runs; change = (B - A) / A; *change%* = significant \
         (Welch's t-test, two-sided, 95%).\n",
    );
    let combo_w = pairs.iter().map(|p| p.0.len()).max().unwrap_or(0).max(8);
    let mut same = Vec::new();
    for f in &figures {
        let rows: Vec<Row> = pairs
            .iter()
            .map(|(c, ga, gb)| row(c.clone(), &ga.values(f), &gb.values(f)))
            .collect();
        let all_vals: Vec<f64> = pairs
            .iter()
            .flat_map(|(_, ga, gb)| ga.values(f).into_iter().chain(gb.values(f)))
            .collect();
        if !all && all_vals.windows(2).all(|w| w[0] == w[1]) {
            same.push(f.clone());
            continue;
        }
        out.push_str(&format!(
            "\n{f}\n{:<6} {:<combo_w$} {:>14} {:>10}   {:>14} {:>12}\n",
            "", "", "A", "", "B", ""
        ));
        for r in rows {
            let num = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "-".into());
            let star = if r.significant { "*" } else { " " };
            out.push_str(&format!(
                "{:<6} {:<combo_w$} {:>14} ({:>8}) {:>14} {star}{:>10}{star}  {}\n",
                "Amean",
                r.combo,
                num(r.a),
                "0.00%",
                num(r.b),
                r.change,
                r.note
            ));
        }
    }
    if !same.is_empty() {
        out.push_str(&format!(
            "\nOne value in every run of both sweeps (--all shows them): {}\n",
            same.join(", ")
        ));
    }
    Ok(out)
}

/// `cargo lab compare`.
pub fn compare(dir_a: &Path, dir_b: &Path, all: bool) -> Res<ExitCode> {
    let a = Dataset::load(dir_a)?;
    let b = Dataset::load(dir_b)?;
    print!(
        "{}",
        render(
            &a,
            &b,
            &dir_a.display().to_string(),
            &dir_b.display().to_string(),
            all
        )?
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_in_percent() {
        assert_eq!(change(184.0, 75.0), "-59.24%");
        assert_eq!(change(0.0, 0.0), "0.00%");
        assert_eq!(change(0.0, 3.0), "n/a");
        assert_eq!(change(10.0, 11.0), "10.00%");
    }

    #[test]
    fn rows_mark_significance() {
        // R's ?t.test examples: 1:10 against 7:20 differs (P = .00001855).
        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        let y: Vec<f64> = (7..=20).map(f64::from).collect();
        let r = row("c".into(), &x, &y);
        assert!(r.significant);
        assert_eq!(r.change, "145.45%");
        let r = row("c".into(), &x, &x);
        assert!(!r.significant);
        assert!(!row("c".into(), &[1.0], &[2.0]).significant);
    }
}
