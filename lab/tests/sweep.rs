//! End to end: a tiny sweep (2 policies x 2 memory sizes x 2 repeats of
//! `files=200 ops=500`) through QEMU, then its three outputs checked against
//! each other and recomputed from the raw results, a second sweep into the
//! same directory (nothing to run), a failing run, `compare`, and the
//! report rendered by headless Chromium to a screenshot that is not blank.
//!
//! Needs QEMU (tools/qemu-run installs it where it can). Chromium (Debian's
//! `chromium`) is needed when KRECLAIM_LAB_REQUIRE_CHROMIUM=1 (`.ci/run`
//! sets it); without it and without that variable the screenshot check is
//! skipped with a notice.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn lab(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kreclaim-lab"))
        .args(args)
        .output()
        .expect("the lab runs");
    eprintln!(
        "$ cargo lab {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// The `<div class="chart ...">` blocks of the report, by their opening tag.
fn blocks<'a>(html: &'a str, class: &str) -> Vec<(&'a str, &'a str)> {
    let open = format!("<div class=\"chart {class}\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let block = &rest[i..];
        let end = block.find("</svg>").expect("a chart block holds an svg") + "</svg>".len();
        let tag_end = block.find('>').unwrap();
        out.push((&block[..tag_end], &block[..end]));
        rest = &block[end..];
    }
    out
}

#[test]
fn tiny_sweep_end_to_end() {
    let dir = fresh_dir("lab-e2e");
    let d = dir.to_str().unwrap();
    let sweep_args = [
        "sweep",
        "--set",
        "policy=nofs,today",
        "--set",
        "mem=12M,24M",
        "--repeat",
        "2",
        "--jobs",
        "2",
        "--out",
        d,
        "--",
        "files=200",
        "ops=500",
        "sample_ms=20",
    ];
    let out = lab(&sweep_args);
    assert!(out.status.success(), "the sweep failed");

    // runs.jsonl: 8 ok runs, each with its result, everything tagged.
    let text = fs::read_to_string(dir.join("runs.jsonl")).unwrap();
    let objs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let runs: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "run").collect();
    let results: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "policy_result")
        .collect();
    let samples: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "sample").collect();
    assert_eq!(runs.len(), 8);
    assert!(runs.iter().all(|r| r["status"] == "ok"), "a run failed");
    assert_eq!(results.len(), 8);
    assert!(samples.len() >= 8);
    for o in results.iter().chain(samples.iter()) {
        assert!(
            o["run"].is_string() && o["settings"].is_object(),
            "untagged: {o}"
        );
    }
    for r in &results {
        // The settings a result is tagged with are the ones it ran with.
        assert_eq!(r["config"]["policy"], r["settings"]["policy"]);
        let mem = match r["settings"]["mem"].as_str().unwrap() {
            "12M" => "12288K",
            "24M" => "24576K",
            m => panic!("mem {m}"),
        };
        assert_eq!(r["config"]["mem"], mem);
        assert_eq!(r["config"]["files"], "200");
    }

    // summary.csv: 4 rows with n = 2 and mean/sd/ci95 per figure, which
    // agree with the raw results.
    let mut rdr = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<BTreeMap<String, String>> = rdr
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 4);
    for col in [
        "policy",
        "mem",
        "n",
        "direct_reclaim_stalls_mean",
        "direct_reclaim_stalls_ci95",
        "elapsed_ms_mean",
        "elapsed_ms_sd",
        "elapsed_ms_ci95",
        "xfs_inode.scanned_mean",
    ] {
        assert!(header.iter().any(|h| h == col), "summary.csv lacks {col}");
    }
    for row in &rows {
        assert_eq!(row["n"], "2");
        let vals: Vec<f64> = results
            .iter()
            .filter(|r| {
                r["settings"]["policy"] == row["policy"].as_str()
                    && r["settings"]["mem"] == row["mem"].as_str()
            })
            .map(|r| r["elapsed_ms"].as_f64().unwrap())
            .collect();
        assert_eq!(vals.len(), 2);
        let mean = (vals[0] + vals[1]) / 2.0;
        let sd = (vals[0] - vals[1]).abs() / 2f64.sqrt();
        let num = |c: &str| row[c].parse::<f64>().unwrap();
        assert!((num("elapsed_ms_mean") - mean).abs() < 1e-6);
        assert!((num("elapsed_ms_sd") - sd).abs() < 1e-5);
        // t(0.975, 1) = 12.7062: the interval of two runs is wide.
        assert!((num("elapsed_ms_ci95") - 12.7062 * sd / 2f64.sqrt()).abs() < 1e-3 * (1.0 + sd));
    }

    // report.html: one <svg> per chart; a figure chart has one point (a
    // <circle>) per combination, a time series one point per sample.
    let html = fs::read_to_string(dir.join("report.html")).unwrap();
    let figure_cols: Vec<&str> = header
        .iter()
        .filter_map(|h| h.strip_suffix("_mean"))
        .collect();
    let varying: Vec<&str> = figure_cols
        .iter()
        .copied()
        .filter(|f| {
            let means: Vec<&str> = rows
                .iter()
                .map(|r| r[&format!("{f}_mean")].as_str())
                .collect();
            means.windows(2).any(|w| w[0] != w[1])
                || rows.iter().any(|r| r[&format!("{f}_sd")] != "0")
        })
        .collect();
    assert!(
        !varying.is_empty(),
        "nothing varies: elapsed_ms at least should"
    );
    let figs = blocks(&html, "figure");
    let series = blocks(&html, "timeseries");
    assert_eq!(
        figs.len(),
        varying.len(),
        "one chart per figure that varies"
    );
    assert_eq!(series.len(), 4, "one time series per combination");
    assert_eq!(html.matches("<svg").count(), figs.len() + series.len());
    for f in &varying {
        let (_, block) = figs
            .iter()
            .find(|(tag, _)| tag.contains(&format!("id=\"fig-{f}\"")))
            .unwrap_or_else(|| panic!("no chart for {f}"));
        assert_eq!(block.matches("<svg").count(), 1);
        assert_eq!(
            block.matches("<circle").count(),
            4,
            "{f}: one point per combination"
        );
    }
    for (tag, block) in &series {
        let run = tag
            .split("data-run=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let n = samples.iter().filter(|s| s["run"] == run).count();
        // The free-pages line: the first in the first series colour, width 2
        // (the axes are thin black polylines).
        let poly = block
            .split("<polyline")
            .find(|p| p.contains("stroke=\"#1F77B4\" stroke-width=\"2\""))
            .expect("a free-pages polyline");
        let pts = poly
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(
            pts.split_whitespace().count(),
            n,
            "run {run}: one point per sample"
        );
    }
    // Self-contained: nothing is fetched, nothing runs.
    for bad in ["<script", "src=", "href=", "url(", "@import", "<link"] {
        assert!(!html.contains(bad), "report.html contains {bad}");
    }

    // Again into the same directory: every run is finished, none is run.
    let before = fs::metadata(dir.join("runs/policy-nofs_mem-12M_r1/run.json"))
        .unwrap()
        .modified()
        .unwrap();
    let out = lab(&sweep_args);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("8 already finished"), "not resumed");
    assert!(!err.contains("runs to do"));
    let after = fs::metadata(dir.join("runs/policy-nofs_mem-12M_r1/run.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // compare: the sweep against itself changes nothing significantly.
    let out = lab(&["compare", d, d]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("Amean  policy=nofs mem=12M"), "{table}");
    assert!(table.contains("elapsed_ms"));
    assert!(!table.contains("*0.00%*"));

    screenshot_not_blank(&dir.join("report.html"));
}

#[test]
fn a_failed_run_is_recorded_not_fatal() {
    let dir = fresh_dir("lab-e2e-fail");
    let d = dir.to_str().unwrap();
    // The kernel refuses an unknown key: the run fails, the sweep goes on.
    let out = lab(&[
        "sweep",
        "--set",
        "policy=today",
        "--repeat",
        "1",
        "--out",
        d,
        "--",
        "bogus=1",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED policy-today_r1"));
    let text = fs::read_to_string(dir.join("runs.jsonl")).unwrap();
    let run: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 1);
    let summary = fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = summary.lines();
    assert_eq!(lines.next(), Some("policy,runs,failed,n"));
    assert_eq!(lines.next(), Some("today,1,1,0"));
    assert!(
        fs::read_to_string(dir.join("report.html"))
            .unwrap()
            .contains("Failed runs")
    );
}

/// Renders `html` with headless Chromium and checks that the screenshot
/// shows something: several colours and a fair share of non-white pixels.
fn screenshot_not_blank(html: &Path) {
    let require = std::env::var("KRECLAIM_LAB_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            !require,
            "chromium not found (Debian: apt-get install chromium)"
        );
        eprintln!("NOTICE: chromium not found: the screenshot check is skipped");
        return;
    };
    let png_path = html.with_extension("png");
    let _ = fs::remove_file(&png_path);
    let profile = html.with_file_name("chromium-profile");
    let _ = fs::remove_dir_all(&profile);
    let status = Command::new("timeout")
        .args([
            "120",
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1400,2400")
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .output()
        .expect("chromium runs");
    assert!(
        status.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let bpp = info.color_type.samples();
    assert!(bpp >= 3, "colour type {:?}", info.color_type);
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(bpp).collect();
    let non_white = px.iter().filter(|p| p[..3] != [255, 255, 255]).count();
    let mut colours: Vec<[u8; 3]> = px.iter().map(|p| [p[0], p[1], p[2]]).collect();
    colours.sort();
    colours.dedup();
    eprintln!(
        "screenshot {}x{}: {} of {} pixels not white, {} colours",
        info.width,
        info.height,
        non_white,
        px.len(),
        colours.len()
    );
    assert!(
        non_white * 100 > px.len(),
        "the screenshot is (almost) blank"
    );
    assert!(
        colours.len() > 16,
        "the screenshot has {} colours",
        colours.len()
    );
}
