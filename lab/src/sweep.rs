//! `cargo lab sweep`: builds the kernel once, runs every combination of
//! the swept settings `--repeat` times through the runner `cargo run` uses
//! (tools/qemu-run), at most `--jobs` at once, skips runs an earlier sweep
//! into the same directory finished, and writes the three outputs.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::data::{Dataset, Res, RunMeta, Settings, SweepSpec, settings_label, tag};

/// `cargo lab sweep` options.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// A swept kernel key and its values: `--set mem=12M,16M,24M`. Repeat
    /// for more keys; the runs are the Cartesian product.
    #[arg(long = "set", value_name = "KEY=V1,V2,...")]
    sets: Vec<String>,
    /// Runs per combination.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Runs at once (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Extra QEMU arguments for every run (the runner's KRECLAIM_QEMU_ARGS),
    /// e.g. "-smp 4".
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    qemu_args: Option<String>,
    /// Guest RAM QEMU gives every run (the runner's KRECLAIM_MEM; the
    /// kernel key `mem=` caps what the page allocator manages).
    #[arg(long, value_name = "SIZE")]
    qemu_mem: Option<String>,
    /// Output directory; runs already finished there are kept.
    #[arg(long, default_value = "target/lab")]
    out: PathBuf,
    /// Seconds before a run counts as hung (the runner's KRECLAIM_TIMEOUT).
    #[arg(long, default_value_t = 300)]
    timeout: u32,
    /// Kernel keys every run gets, e.g. `-- files=300 ops=1000`.
    #[arg(last = true, value_name = "KEY=VALUE")]
    kernel_args: Vec<String>,
}

/// One run to do.
struct Job {
    meta: RunMeta,
}

/// The repository's root (the lab lives in its `lab/` directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// `key=v1,v2` into the key and its values.
fn parse_set(s: &str) -> Res<(String, Vec<String>)> {
    let (k, vals) = s
        .split_once('=')
        .ok_or_else(|| format!("--set '{s}': expected KEY=V1,V2,..."))?;
    let vals: Vec<String> = vals.split(',').map(str::to_string).collect();
    if k.is_empty() || vals.iter().any(String::is_empty) {
        return Err(format!("--set '{s}': a key and non-empty values, e.g. mem=12M,16M").into());
    }
    let mut seen = Vec::new();
    for v in &vals {
        if seen.contains(&v) {
            return Err(format!("--set '{s}': value '{v}' given twice").into());
        }
        seen.push(v);
    }
    Ok((k.to_string(), vals))
}

/// Every combination of the swept values, the first key varying slowest.
fn combinations(sets: &[(String, Vec<String>)]) -> Vec<Settings> {
    let mut out: Vec<Settings> = vec![Vec::new()];
    for (k, vals) in sets {
        out = out
            .into_iter()
            .flat_map(|base| {
                vals.iter().map(move |v| {
                    let mut s = base.clone();
                    s.push((k.clone(), v.clone()));
                    s
                })
            })
            .collect();
    }
    out
}

/// A directory name for a combination's run: `policy-nofs_mem-12M_r1`.
fn run_id(settings: &Settings, repeat: usize) -> String {
    let mut id: String = settings
        .iter()
        .map(|(k, v)| format!("{k}-{v}"))
        .collect::<Vec<_>>()
        .join("_");
    if id.is_empty() {
        id.push_str("default");
    }
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{id}_r{repeat}")
}

/// Builds the kernel as `cargo run` does and returns its ELF.
fn build_kernel(root: &Path) -> Res<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("lab: building the kernel (cargo build --bin kreclaim, as `cargo run` does)");
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--bin",
            "kreclaim",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the kernel failed".into());
    }
    let mut elf = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "kreclaim"
            && let Some(exe) = v["executable"].as_str()
        {
            elf = Some(PathBuf::from(exe));
        }
    }
    elf.ok_or_else(|| "cargo build reported no kreclaim executable".into())
}

/// Runs one kernel and records what became of it.
fn run_one(runner: &Path, elf: &Path, dir: &Path, timeout: u32, mut meta: RunMeta) -> RunMeta {
    let start = Instant::now();
    let _ = fs::create_dir_all(dir);
    let stdout_path = dir.join("stdout.jsonl");
    let stderr_path = dir.join("stderr.log");
    let spawn = || -> std::io::Result<std::process::ExitStatus> {
        let mut cmd = Command::new(runner);
        cmd.arg(elf)
            .args(&meta.cmdline)
            .env("KRECLAIM_TIMEOUT", timeout.to_string())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?);
        if meta.qemu_args.is_empty() {
            cmd.env_remove("KRECLAIM_QEMU_ARGS");
        } else {
            cmd.env("KRECLAIM_QEMU_ARGS", &meta.qemu_args);
        }
        if meta.qemu_mem.is_empty() {
            cmd.env_remove("KRECLAIM_MEM");
        } else {
            cmd.env("KRECLAIM_MEM", &meta.qemu_mem);
        }
        cmd.status()
    };
    let status = spawn();
    meta.seconds = start.elapsed().as_secs_f64();
    let mut reason = None;
    match &status {
        Err(e) => reason = Some(format!("cannot start {}: {e}", runner.display())),
        Ok(st) => {
            meta.exit_code = st.code();
            match st.code() {
                Some(0) => {}
                Some(124) => {
                    reason = Some(format!("timeout: no end within {timeout} s (exit 124)"))
                }
                Some(c) => reason = Some(format!("the runner exited with status {c}")),
                None => reason = Some("the runner was killed by a signal".into()),
            }
        }
    }
    if reason.is_none() {
        let text = fs::read_to_string(&stdout_path).unwrap_or_default();
        let mut results = 0;
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v["kind"] == "policy_result" => results += 1,
                Ok(_) => {}
                Err(e) => {
                    reason = Some(format!("standard output line {} is not JSON: {e}", i + 1));
                    break;
                }
            }
        }
        if reason.is_none() && results == 0 {
            reason = Some("no policy_result on standard output".into());
        }
    }
    meta.status = if reason.is_none() { "ok" } else { "failed" }.into();
    if reason.is_some() {
        let err = fs::read_to_string(&stderr_path).unwrap_or_default();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        meta.stderr_tail = lines[lines.len().saturating_sub(5)..]
            .iter()
            .map(|l| l.to_string())
            .collect();
    }
    meta.reason = reason;
    // run.json last, through a rename: its presence means the run is over.
    let tmp = dir.join("run.json.tmp");
    if fs::write(
        &tmp,
        serde_json::to_string_pretty(&meta).unwrap_or_default(),
    )
    .is_ok()
    {
        let _ = fs::rename(&tmp, dir.join("run.json"));
    }
    meta
}

/// A finished run from an earlier sweep with the same command line, if any.
fn finished(dir: &Path, want: &RunMeta) -> Option<RunMeta> {
    let meta: RunMeta =
        serde_json::from_str(&fs::read_to_string(dir.join("run.json")).ok()?).ok()?;
    (meta.ok()
        && meta.cmdline == want.cmdline
        && meta.qemu_args == want.qemu_args
        && meta.qemu_mem == want.qemu_mem)
        .then_some(meta)
}

/// Writes DIR/runs.jsonl from the runs' directories: per run its `run`
/// line, then its results and samples tagged with the run.
fn write_runs_jsonl(out: &Path, metas: &[RunMeta]) -> Res<()> {
    let path = out.join("runs.jsonl");
    let mut w = std::io::BufWriter::new(
        File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?,
    );
    for meta in metas {
        writeln!(w, "{}", meta.to_json_line())?;
        let Ok(f) = File::open(out.join("runs").join(&meta.run).join("stdout.jsonl")) else {
            continue;
        };
        for line in BufReader::new(f).lines() {
            let line = line?;
            if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&line) {
                writeln!(w, "{}", tag(meta, &obj))?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

/// `cargo lab sweep`.
pub fn sweep(args: SweepArgs) -> Res<ExitCode> {
    let mut sets = Vec::new();
    for s in &args.sets {
        let (k, v) = parse_set(s)?;
        if sets.iter().any(|(k2, _): &(String, Vec<String>)| *k2 == k) {
            return Err(format!("--set {k}=... given twice: list its values in one --set").into());
        }
        sets.push((k, v));
    }
    for a in &args.kernel_args {
        let Some((k, _)) = a.split_once('=') else {
            return Err(format!("kernel argument '{a}' after '--': expected KEY=VALUE").into());
        };
        if sets.iter().any(|(k2, _)| k2 == k) {
            return Err(format!("'{k}' is both swept (--set) and fixed ('{a}' after '--')").into());
        }
    }
    if sets
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(
            args.kernel_args
                .iter()
                .filter_map(|a| a.split_once('=').map(|p| p.0)),
        )
        .any(|k| k == "format")
    {
        return Err("the lab sets format=json itself: do not give format=".into());
    }
    let qemu_args = args
        .qemu_args
        .clone()
        .unwrap_or_else(|| std::env::var("KRECLAIM_QEMU_ARGS").unwrap_or_default());
    let qemu_mem = args
        .qemu_mem
        .clone()
        .unwrap_or_else(|| std::env::var("KRECLAIM_MEM").unwrap_or_default());
    // As typed, near enough: arguments with spaces quoted.
    let command = std::iter::once("cargo lab".to_string())
        .chain(std::env::args().skip(1).map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ");
    let spec = SweepSpec {
        sets,
        repeat: args.repeat as usize,
        kernel_args: args.kernel_args.clone(),
        qemu_args: qemu_args.clone(),
        qemu_mem: qemu_mem.clone(),
        command,
    };

    let out = args.out.clone();
    let runs_dir = out.join("runs");
    fs::create_dir_all(&runs_dir)
        .map_err(|e| format!("cannot create {}: {e}", runs_dir.display()))?;
    fs::write(out.join("sweep.json"), serde_json::to_string_pretty(&spec)?)?;

    let mut jobs: Vec<Job> = Vec::new();
    for settings in combinations(&spec.sets) {
        for repeat in 1..=spec.repeat {
            let mut cmdline = spec.kernel_args.clone();
            cmdline.extend(settings.iter().map(|(k, v)| format!("{k}={v}")));
            cmdline.push("format=json".into());
            jobs.push(Job {
                meta: RunMeta {
                    run: run_id(&settings, repeat),
                    settings: settings.clone(),
                    repeat,
                    cmdline,
                    qemu_args: qemu_args.clone(),
                    qemu_mem: qemu_mem.clone(),
                    status: "pending".into(),
                    exit_code: None,
                    reason: None,
                    seconds: 0.0,
                    stderr_tail: Vec::new(),
                },
            });
        }
    }
    let total = jobs.len();
    let mut metas: Vec<Option<RunMeta>> = jobs
        .iter()
        .map(|j| finished(&runs_dir.join(&j.meta.run), &j.meta))
        .collect();
    let todo: Vec<usize> = (0..total).filter(|&i| metas[i].is_none()).collect();
    let skipped = total - todo.len();
    eprintln!(
        "lab: {} combinations x {} repeats = {total} runs{}",
        total / spec.repeat.max(1),
        spec.repeat,
        if skipped > 0 {
            format!(", {skipped} already finished in {}", out.display())
        } else {
            String::new()
        }
    );

    if !todo.is_empty() {
        let root = repo_root();
        let elf = build_kernel(&root)?;
        let runner = root.join("tools").join("qemu-run");
        let n_jobs = args
            .jobs
            .map(|j| j as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .min(todo.len());
        eprintln!(
            "lab: {} runs to do, {n_jobs} at once, kernel {}",
            todo.len(),
            elf.display()
        );
        let pb = ProgressBar::new(todo.len() as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} runs ({msg}) ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        pb.enable_steady_tick(Duration::from_millis(500));
        let failed = AtomicUsize::new(0);
        pb.set_message("0 failed");
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, RunMeta)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..n_jobs {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&ji) = todo.get(i) else { break };
                        let job = &jobs[ji];
                        let meta = run_one(
                            &runner,
                            &elf,
                            &runs_dir.join(&job.meta.run),
                            args.timeout,
                            job.meta.clone(),
                        );
                        if !meta.ok() {
                            let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                            pb.set_message(format!("{n} failed"));
                            pb.println(format!(
                                "lab: run {} failed: {}",
                                meta.run,
                                meta.reason.as_deref().unwrap_or("?")
                            ));
                        }
                        pb.inc(1);
                        done.lock().expect("no worker panics").push((ji, meta));
                    }
                });
            }
        });
        pb.finish();
        for (ji, meta) in done.into_inner().expect("no worker panics") {
            metas[ji] = Some(meta);
        }
    }

    let metas: Vec<RunMeta> = metas
        .into_iter()
        .map(|m| m.expect("every run was done or found"))
        .collect();
    write_runs_jsonl(&out, &metas)?;
    let data = Dataset::load(&out)?;
    crate::summary::write(&data, &out.join("summary.csv"))?;
    crate::report::write(&data, &out.join("report.html"))?;

    let failed: Vec<&RunMeta> = metas.iter().filter(|m| !m.ok()).collect();
    eprintln!(
        "lab: {} runs ok, {} failed; wrote {}, {} and {}",
        total - failed.len(),
        failed.len(),
        out.join("runs.jsonl").display(),
        out.join("summary.csv").display(),
        out.join("report.html").display()
    );
    for m in &failed {
        eprintln!(
            "lab: FAILED {} ({}): {} (see {})",
            m.run,
            settings_label(&m.settings),
            m.reason.as_deref().unwrap_or("?"),
            runs_dir.join(&m.run).join("stderr.log").display()
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cartesian_product_first_key_slowest() {
        let sets = vec![
            (
                "policy".to_string(),
                vec!["nofs".to_string(), "today".to_string()],
            ),
            (
                "mem".to_string(),
                vec!["12M".to_string(), "24M".to_string()],
            ),
        ];
        let c = combinations(&sets);
        let labels: Vec<String> = c.iter().map(settings_label).collect();
        assert_eq!(
            labels,
            [
                "policy=nofs mem=12M",
                "policy=nofs mem=24M",
                "policy=today mem=12M",
                "policy=today mem=24M"
            ]
        );
        assert_eq!(run_id(&c[1], 2), "policy-nofs_mem-24M_r2");
        assert_eq!(combinations(&[]), vec![Vec::<(String, String)>::new()]);
        assert_eq!(run_id(&Vec::new(), 1), "default_r1");
    }

    #[test]
    fn set_syntax_is_checked() {
        assert_eq!(
            parse_set("mem=12M,24M").unwrap(),
            (
                "mem".to_string(),
                vec!["12M".to_string(), "24M".to_string()]
            )
        );
        assert!(parse_set("mem").is_err());
        assert!(parse_set("=1").is_err());
        assert!(parse_set("mem=12M,").is_err());
        assert!(parse_set("mem=12M,12M").is_err());
    }
}
