//! DIR/report.html: one self-contained page (inline SVG, inline CSS, no
//! scripts, nothing fetched) with the sweep's configuration, a chart per
//! figure against the swept key, time series of a representative run per
//! combination, and each policy's lockdep report.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

use crate::chart::{Series, XAxis, figure_chart, time_series_chart};
use crate::data::{Dataset, Group, Res, fmt_num, html_escape};
use crate::stats::summarize;

/// The figures that change somewhere in the sweep (charted) and those that
/// have one value in every run (listed with it).
pub fn split_figures(data: &Dataset) -> (Vec<String>, Vec<(String, f64)>) {
    let groups = data.groups();
    let mut varying = Vec::new();
    let mut constant = Vec::new();
    for f in data.figure_names() {
        let vals: Vec<f64> = groups.iter().flat_map(|g| g.values(&f)).collect();
        match vals.first() {
            Some(&v0) if vals.iter().all(|&v| v == v0) => constant.push((f, v0)),
            _ => varying.push(f),
        }
    }
    (varying, constant)
}

/// The x axis of the figure charts and, per group, its series' label.
fn axis(data: &Dataset) -> (XAxis, Option<String>) {
    match data.spec.x_key() {
        Some(k) => (XAxis::new(k, data.spec.values_of(k)), Some(k.to_string())),
        None => (XAxis::new("configuration", &["default".to_string()]), None),
    }
}

/// The label of `g`'s line: its policy (unless policy is on the x axis)
/// and the swept keys that are neither on the x axis nor the policy.
fn series_label(g: &Group, x_key: Option<&str>) -> String {
    let mut parts = Vec::new();
    if x_key != Some("policy") {
        parts.push(g.policy.clone());
    }
    for (k, v) in &g.settings {
        if Some(k.as_str()) != x_key && k != "policy" {
            parts.push(format!("{k}={v}"));
        }
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(" ")
    }
}

/// The series of `figure`: per line, (x, mean, ci95) for each x with results.
fn series_of(data: &Dataset, figure: &str) -> (XAxis, Vec<Series>) {
    let (x, x_key) = axis(data);
    let mut series: Vec<Series> = Vec::new();
    for g in data.groups() {
        let label = series_label(&g, x_key.as_deref());
        let pos = match &x_key {
            Some(k) => g.get(k).and_then(|v| x.position(v)),
            None => Some(x.ticks[0].0),
        };
        let (Some(pos), Some(s)) = (pos, summarize(&g.values(figure))) else {
            continue;
        };
        let i = match series.iter().position(|s| s.label == label) {
            Some(i) => i,
            None => {
                series.push(Series {
                    label,
                    points: Vec::new(),
                });
                series.len() - 1
            }
        };
        series[i].points.push((pos, s.mean, s.ci95));
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    (x, series)
}

/// One figure's chart as a standalone SVG document.
pub fn figure_svg(data: &Dataset, figure: &str) -> Res<String> {
    if !data.figure_names().iter().any(|f| f == figure) {
        return Err(format!(
            "no figure '{figure}' in this sweep (summary.csv's columns name them, without _mean)"
        )
        .into());
    }
    let (x, series) = series_of(data, figure);
    figure_chart(figure, &x, &series)
}

/// The run of `g` whose elapsed time is the median (the lower one for an
/// even count): its time series stand for the combination.
fn representative(g: &Group) -> Option<&(usize, Map<String, Value>)> {
    let mut rs: Vec<&(usize, Map<String, Value>)> = g.results.iter().collect();
    rs.sort_by(|a, b| {
        let e = |r: &Map<String, Value>| r.get("elapsed_ms").and_then(Value::as_f64).unwrap_or(0.0);
        e(&a.1).total_cmp(&e(&b.1))
    });
    rs.get(rs.len().saturating_sub(1) / 2).copied()
}

/// The page's style sheet.
const CSS: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
th{background:#f2f2f2}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:.5em;overflow-x:auto}\
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #ddd;padding:.5em}\
.chart h3{margin:.2em 0;font-size:1em}.failed{color:#b00}";

/// The whole page.
pub fn html(data: &Dataset) -> Res<String> {
    let spec = &data.spec;
    let groups = data.groups();
    let (charted, constant) = split_figures(data);
    let mut h = String::new();
    let ok_runs: Vec<_> = data.runs.iter().filter(|r| r.meta.ok()).collect();
    let failed: Vec<_> = data.runs.iter().filter(|r| !r.meta.ok()).collect();
    let first: Option<&Map<String, Value>> = ok_runs.iter().flat_map(|r| r.results.iter()).next();

    writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kreclaim lab report</title>\
         <style>{CSS}</style></head><body>"
    )?;
    writeln!(h, "<h1>kreclaim lab report</h1>")?;
    writeln!(h, "<p><code>{}</code></p>", html_escape(&spec.command))?;
    writeln!(
        h,
        "<p>{} runs: {} ok, <span class=\"{}\">{} failed</span>; {} combinations; {} figures charted \
         (the others have one value in every run, listed below).</p>",
        data.runs.len(),
        ok_runs.len(),
        if failed.is_empty() { "" } else { "failed" },
        failed.len(),
        groups.len(),
        charted.len()
    )?;

    // Configuration.
    writeln!(h, "<h2>Configuration</h2><table>")?;
    let mut row = |k: &str, v: String| {
        writeln!(
            h,
            "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
            html_escape(k),
            html_escape(&v)
        )
    };
    for (k, vals) in &spec.sets {
        row(&format!("swept: {k}"), vals.join(", "))?;
    }
    row("repeats per combination", spec.repeat.to_string())?;
    row("kernel keys of every run", spec.kernel_args.join(" "))?;
    row(
        "QEMU arguments (KRECLAIM_QEMU_ARGS)",
        if spec.qemu_args.is_empty() {
            "runner default (-smp 2)".into()
        } else {
            spec.qemu_args.clone()
        },
    )?;
    row(
        "QEMU memory (KRECLAIM_MEM)",
        if spec.qemu_mem.is_empty() {
            "runner default".into()
        } else {
            spec.qemu_mem.clone()
        },
    )?;
    let mut commits: Vec<String> = ok_runs
        .iter()
        .flat_map(|r| r.results.iter())
        .filter_map(|r| r.get("commit").and_then(Value::as_str).map(String::from))
        .collect();
    commits.dedup();
    commits.sort();
    commits.dedup();
    if let Some(r) = first {
        row(
            "kreclaim version",
            r.get("version")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .into(),
        )?;
        row(
            if commits.len() > 1 {
                "commits (MIXED: runs from different kernels)"
            } else {
                "commit"
            },
            commits.join(", "),
        )?;
        row(
            "CPUs",
            r.get("cpus").map(|v| v.to_string()).unwrap_or_default(),
        )?;
    }
    writeln!(h, "</table>")?;
    if let Some(cfg) = first
        .and_then(|r| r.get("config"))
        .and_then(Value::as_object)
    {
        writeln!(
            h,
            "<h3>Kernel configuration as resolved (first run; swept keys vary)</h3><table><tr><th class=\"l\">key</th><th class=\"l\">value</th></tr>"
        )?;
        for (k, v) in cfg {
            let swept = spec.sets.iter().any(|(s, _)| s == k);
            let v = if swept {
                "(swept)".to_string()
            } else {
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            };
            writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                html_escape(k),
                html_escape(&v)
            )?;
        }
        writeln!(h, "</table>")?;
    }
    // Knobs per policy.
    let mut policies: Vec<(String, &Map<String, Value>)> = Vec::new();
    for r in ok_runs.iter().flat_map(|r| r.results.iter()) {
        if let Some(p) = r.get("policy").and_then(Value::as_str)
            && !policies.iter().any(|(q, _)| q == p)
        {
            policies.push((p.to_string(), r));
        }
    }
    if !policies.is_empty() {
        writeln!(
            h,
            "<h3>Policy knobs as resolved</h3><table><tr><th class=\"l\">knob</th>"
        )?;
        for (p, _) in &policies {
            writeln!(h, "<th class=\"l\">{}</th>", html_escape(p))?;
        }
        writeln!(h, "</tr>")?;
        let knobs: Vec<String> = policies[0]
            .1
            .get("knobs")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for k in knobs {
            write!(h, "<tr><td class=\"l\">{}</td>", html_escape(&k))?;
            for (_, r) in &policies {
                let v = r
                    .get("knobs")
                    .and_then(|m| m.get(&k))
                    .map(|v| {
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_default();
                write!(h, "<td class=\"l\">{}</td>", html_escape(&v))?;
            }
            writeln!(h, "</tr>")?;
        }
        writeln!(h, "</table>")?;
    }
    if !failed.is_empty() {
        writeln!(
            h,
            "<h3 class=\"failed\">Failed runs (left out of the statistics)</h3><table><tr><th class=\"l\">run</th><th class=\"l\">reason</th><th class=\"l\">last lines of standard error</th></tr>"
        )?;
        for r in &failed {
            writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\"><pre>{}</pre></td></tr>",
                html_escape(&r.meta.run),
                html_escape(r.meta.reason.as_deref().unwrap_or("?")),
                html_escape(&r.meta.stderr_tail.join("\n"))
            )?;
        }
        writeln!(h, "</table>")?;
    }

    // Figures.
    writeln!(
        h,
        "<h2>Figures</h2><p>Each point is the mean over a combination's runs; the bar is the 95% confidence \
         interval of the mean (Student's t, n&minus;1 degrees of freedom; none for a single run).</p><div class=\"charts\">"
    )?;
    for f in &charted {
        let (x, series) = series_of(data, f);
        let svg = figure_chart(f, &x, &series)?;
        writeln!(
            h,
            "<div class=\"chart figure\" id=\"fig-{0}\"><h3>{0}</h3>{svg}",
            html_escape(f)
        )?;
        // The numbers behind the chart.
        write!(
            h,
            "<table><tr><th class=\"l\">{}</th>",
            html_escape(&x.name)
        )?;
        for (_, l) in &x.ticks {
            write!(h, "<th>{}</th>", html_escape(l))?;
        }
        writeln!(h, "</tr>")?;
        for s in &series {
            write!(h, "<tr><td class=\"l\">{}</td>", html_escape(&s.label))?;
            for (p, _) in &x.ticks {
                match s.points.iter().find(|q| q.0 == *p) {
                    Some(&(_, m, Some(ci))) => {
                        write!(h, "<td>{} &plusmn; {}</td>", fmt_num(m), fmt_num(ci))?
                    }
                    Some(&(_, m, None)) => write!(h, "<td>{}</td>", fmt_num(m))?,
                    None => write!(h, "<td></td>")?,
                }
            }
            writeln!(h, "</tr>")?;
        }
        writeln!(h, "</table></div>")?;
    }
    writeln!(h, "</div>")?;
    if !constant.is_empty() {
        writeln!(h, "<h3>Figures with one value in every run</h3><p>")?;
        let items: Vec<String> = constant
            .iter()
            .map(|(f, v)| format!("{}&nbsp;=&nbsp;{}", html_escape(f), fmt_num(*v)))
            .collect();
        writeln!(h, "{}</p>", items.join(", "))?;
    }

    // Time series.
    writeln!(
        h,
        "<h2>Time series</h2><p>Per combination the run with the median elapsed time, from its samples: \
         free pages against the zone's watermarks, and the pages reclaimed directly and by kswapd and \
         the objects the shrinkers freed, cumulative.</p><div class=\"charts\">"
    )?;
    for g in &groups {
        let Some((ri, r)) = representative(g) else {
            continue;
        };
        let run = &data.runs[*ri];
        let samples: Vec<&Map<String, Value>> = run
            .samples
            .iter()
            .filter(|s| {
                s.get("policy")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p == g.policy)
            })
            .collect();
        if samples.is_empty() {
            continue;
        }
        let num = |s: &Map<String, Value>, k: &str| s.get(k).and_then(Value::as_f64);
        let free: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((num(s, "ms")?, num(s, "free_pages")?)))
            .collect();
        let watermarks: Vec<(String, f64)> = r
            .get("ram")
            .and_then(|m| m.get("watermark_pages"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let reclaim: Vec<(String, Vec<(f64, f64)>)> = [
            ("direct reclaim pages", "direct_reclaim_pages"),
            ("kswapd pages", "kswapd_pages"),
            ("shrinker objects freed", "shrinker_freed"),
        ]
        .iter()
        .map(|(label, k)| {
            (
                label.to_string(),
                samples
                    .iter()
                    .filter_map(|s| Some((num(s, "ms")?, num(s, k)?)))
                    .collect(),
            )
        })
        .collect();
        let title = format!("{} (run {})", g.label(), run.meta.run);
        let svg = time_series_chart(&title, &free, &watermarks, &reclaim)?;
        writeln!(
            h,
            "<div class=\"chart timeseries\" data-run=\"{}\" data-samples=\"{}\"><h3>{}</h3>{svg}</div>",
            html_escape(&run.meta.run),
            free.len(),
            html_escape(&g.label())
        )?;
    }
    writeln!(h, "</div>")?;

    // Lockdep.
    writeln!(h, "<h2>Lockdep reports</h2>")?;
    for (p, _) in &policies {
        let rs: Vec<&Map<String, Value>> = ok_runs
            .iter()
            .flat_map(|r| r.results.iter())
            .filter(|r| r.get("policy").and_then(Value::as_str) == Some(p))
            .collect();
        let with = rs
            .iter()
            .filter(|r| {
                r.get("lockdep_reports")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    > 0
            })
            .count();
        writeln!(
            h,
            "<h3>{}</h3><p>{} of {} results report a lockdep splat.</p>",
            html_escape(p),
            with,
            rs.len()
        )?;
        if let Some(text) = rs
            .iter()
            .find_map(|r| r.get("first_lockdep_report").and_then(Value::as_str))
        {
            writeln!(h, "<pre>{}</pre>", html_escape(text))?;
        }
    }
    writeln!(h, "</body></html>")?;
    Ok(h)
}

/// Writes report.html.
pub fn write(data: &Dataset, path: &Path) -> Res<()> {
    let page = html(data)?;
    fs::write(path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
