//! What a sweep leaves in its directory and how it is read back: the sweep
//! spec (sweep.json), the runs with their results and samples (runs.jsonl),
//! the combinations they group into, and the numeric figures of a result.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Errors are messages for the user.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A sweep as asked for: written to DIR/sweep.json so that `report`,
/// `chart` and `compare` know which keys were swept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// The swept keys with their values, in the order given.
    pub sets: Vec<(String, Vec<String>)>,
    /// Runs per combination.
    pub repeat: usize,
    /// Kernel keys every run gets (after `--`).
    pub kernel_args: Vec<String>,
    /// `KRECLAIM_QEMU_ARGS` of the runs ("" for the runner's defaults).
    pub qemu_args: String,
    /// `KRECLAIM_MEM` of the runs ("" for the runner's default).
    pub qemu_mem: String,
    /// The command line that made the sweep, for the report.
    pub command: String,
}

impl SweepSpec {
    /// The key drawn on the x axis: the first swept key other than
    /// `policy`, else `policy`, else none.
    pub fn x_key(&self) -> Option<&str> {
        self.sets
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| *k != "policy")
            .or_else(|| {
                self.sets
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .find(|k| *k == "policy")
            })
    }

    /// The values swept for `key`, in the order given.
    pub fn values_of(&self, key: &str) -> &[String] {
        self.sets
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }
}

/// A run's settings: the swept keys with this run's values, in sweep order.
pub type Settings = Vec<(String, String)>;

/// Settings as a JSON object (keys in sweep order).
pub fn settings_json(settings: &Settings) -> Value {
    Value::Object(
        settings
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Settings as `k=v k=v` ("default" when nothing is swept).
pub fn settings_label(settings: &Settings) -> String {
    if settings.is_empty() {
        return "default".into();
    }
    settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One run as recorded in DIR/runs/ID/run.json and in the `{"kind":"run"}`
/// line of runs.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMeta {
    /// The run's id (also its directory's name).
    pub run: String,
    /// The swept keys with this run's values.
    pub settings: Settings,
    /// 1-based repeat number.
    pub repeat: usize,
    /// The kernel command line.
    pub cmdline: Vec<String>,
    /// `KRECLAIM_QEMU_ARGS` it ran with.
    pub qemu_args: String,
    /// `KRECLAIM_MEM` it ran with.
    pub qemu_mem: String,
    /// "ok" or "failed".
    pub status: String,
    /// The runner's exit code (none when killed by a signal).
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The last lines of the run's standard error, for failed runs.
    pub stderr_tail: Vec<String>,
}

impl RunMeta {
    /// The run's line in runs.jsonl.
    pub fn to_json_line(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), "run".into());
        m.insert("run".into(), self.run.clone().into());
        m.insert("settings".into(), settings_json(&self.settings));
        m.insert("repeat".into(), self.repeat.into());
        m.insert("status".into(), self.status.clone().into());
        m.insert("exit_code".into(), self.exit_code.into());
        m.insert("reason".into(), self.reason.clone().into());
        m.insert("seconds".into(), self.seconds.into());
        m.insert("cmdline".into(), self.cmdline.join(" ").into());
        m.insert("qemu_args".into(), self.qemu_args.clone().into());
        m.insert("qemu_mem".into(), self.qemu_mem.clone().into());
        m.insert("stderr_tail".into(), self.stderr_tail.clone().into());
        Value::Object(m)
    }

    /// Whether the run finished with a result.
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// A kernel object tagged with the run that produced it: `run`,
/// `settings` and `repeat` first, then the object's own fields.
pub fn tag(meta: &RunMeta, obj: &Map<String, Value>) -> Value {
    let mut m = Map::new();
    if let Some(kind) = obj.get("kind") {
        m.insert("kind".into(), kind.clone());
    }
    m.insert("run".into(), meta.run.clone().into());
    m.insert("settings".into(), settings_json(&meta.settings));
    m.insert("repeat".into(), meta.repeat.into());
    m.insert("run_status".into(), meta.status.clone().into());
    for (k, v) in obj {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(m)
}

/// A run read back from runs.jsonl.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its record.
    pub meta: RunMeta,
    /// Its `policy_result` objects (one per policy it ran).
    pub results: Vec<Map<String, Value>>,
    /// Its `sample` objects.
    pub samples: Vec<Map<String, Value>>,
}

/// The runs of one combination under one policy: a row of summary.csv.
#[derive(Debug, Clone)]
pub struct Group {
    /// The swept keys' values.
    pub settings: Settings,
    /// The policy of the results (the result's own `policy`).
    pub policy: String,
    /// Indices into [`Dataset::runs`] of the runs of this combination.
    pub runs: Vec<usize>,
    /// (run index, result) for each result of an ok run under this policy.
    pub results: Vec<(usize, Map<String, Value>)>,
}

impl Group {
    /// The values of `figure` over the results.
    pub fn values(&self, figure: &str) -> Vec<f64> {
        self.results
            .iter()
            .filter_map(|(_, r)| {
                figures(r)
                    .into_iter()
                    .find(|(f, _)| f == figure)
                    .map(|(_, v)| v)
            })
            .collect()
    }

    /// The setting of `key`: the swept value, or the policy for `policy`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .or((key == "policy").then_some(self.policy.as_str()))
    }

    /// `k=v ...` with the policy added when it was not swept.
    pub fn label(&self) -> String {
        let mut l = settings_label(&self.settings);
        if !self.settings.iter().any(|(k, _)| k == "policy") {
            if self.settings.is_empty() {
                l = format!("policy={}", self.policy);
            } else {
                l = format!("{l} policy={}", self.policy);
            }
        }
        l
    }
}

/// A sweep's directory read back.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// DIR/sweep.json.
    pub spec: SweepSpec,
    /// Every run of the sweep, in sweep order.
    pub runs: Vec<Run>,
}

impl Dataset {
    /// Reads DIR/sweep.json and DIR/runs.jsonl.
    pub fn load(dir: &Path) -> Res<Dataset> {
        let spec_path = dir.join("sweep.json");
        let spec: SweepSpec = serde_json::from_str(
            &fs::read_to_string(&spec_path)
                .map_err(|e| format!("cannot read {}: {e}", spec_path.display()))?,
        )
        .map_err(|e| format!("{}: {e}", spec_path.display()))?;
        let path = dir.join("runs.jsonl");
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut runs: Vec<Run> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
            let Value::Object(obj) = v else {
                return Err(format!("{}:{}: not a JSON object", path.display(), i + 1).into());
            };
            match obj.get("kind").and_then(Value::as_str) {
                Some("run") => {
                    let settings = obj
                        .get("settings")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let s = |k: &str| {
                        obj.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    runs.push(Run {
                        meta: RunMeta {
                            run: s("run"),
                            settings,
                            repeat: obj.get("repeat").and_then(Value::as_u64).unwrap_or(0) as usize,
                            cmdline: s("cmdline").split_whitespace().map(String::from).collect(),
                            qemu_args: s("qemu_args"),
                            qemu_mem: s("qemu_mem"),
                            status: s("status"),
                            exit_code: obj
                                .get("exit_code")
                                .and_then(Value::as_i64)
                                .map(|c| c as i32),
                            reason: obj.get("reason").and_then(Value::as_str).map(String::from),
                            seconds: obj.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
                            stderr_tail: obj
                                .get("stderr_tail")
                                .and_then(Value::as_array)
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|l| l.as_str().map(String::from))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        },
                        results: Vec::new(),
                        samples: Vec::new(),
                    });
                }
                Some(kind @ ("policy_result" | "sample")) => {
                    let id = obj.get("run").and_then(Value::as_str).unwrap_or_default();
                    let Some(run) = runs.iter_mut().rev().find(|r| r.meta.run == id) else {
                        return Err(format!(
                            "{}:{}: a {kind} of run '{id}' before that run's line",
                            path.display(),
                            i + 1
                        )
                        .into());
                    };
                    if kind == "sample" {
                        run.samples.push(obj);
                    } else {
                        run.results.push(obj);
                    }
                }
                _ => {}
            }
        }
        Ok(Dataset { spec, runs })
    }

    /// The combinations (and policies within them), in sweep order. A run
    /// without results (failed) counts in every group of its combination;
    /// its combination gets a group of its own when no run of it succeeded.
    pub fn groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for (ri, run) in self.runs.iter().enumerate() {
            let usable = if run.meta.ok() { &run.results[..] } else { &[] };
            for r in usable {
                let policy = r.get("policy").and_then(Value::as_str).unwrap_or("?");
                let gi = match groups
                    .iter()
                    .position(|g| g.settings == run.meta.settings && g.policy == policy)
                {
                    Some(gi) => gi,
                    None => {
                        groups.push(Group {
                            settings: run.meta.settings.clone(),
                            policy: policy.to_string(),
                            runs: Vec::new(),
                            results: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                let g = &mut groups[gi];
                if !g.runs.contains(&ri) {
                    g.runs.push(ri);
                }
                g.results.push((ri, r.clone()));
            }
        }
        for (ri, run) in self.runs.iter().enumerate() {
            if run.meta.ok() && !run.results.is_empty() {
                continue;
            }
            let mut found = false;
            for g in groups
                .iter_mut()
                .filter(|g| g.settings == run.meta.settings)
            {
                g.runs.push(ri);
                found = true;
            }
            if !found {
                let policy = run
                    .meta
                    .settings
                    .iter()
                    .find(|(k, _)| k == "policy")
                    .map(|(_, v)| v.clone())
                    .or_else(|| {
                        self.spec
                            .kernel_args
                            .iter()
                            .find_map(|a| a.strip_prefix("policy=").map(String::from))
                    })
                    .unwrap_or_else(|| "?".into());
                groups.push(Group {
                    settings: run.meta.settings.clone(),
                    policy,
                    runs: vec![ri],
                    results: Vec::new(),
                });
            }
        }
        // Sweep order: by the first run of each group.
        groups.sort_by_key(|g| g.runs.iter().copied().min().unwrap_or(0));
        groups
    }

    /// Every figure any ok result has, in first-seen order.
    pub fn figure_names(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut names = Vec::new();
        for run in self.runs.iter().filter(|r| r.meta.ok()) {
            for r in &run.results {
                for (f, _) in figures(r) {
                    if seen.insert(f.clone()) {
                        names.push(f);
                    }
                }
            }
        }
        names
    }
}

/// Top-level fields of a result that are not figures of the run: its
/// identity and configuration.
const NOT_FIGURES: &[&str] = &["cpus", "ops_requested", "samples"];
/// Per-shrinker fields that are configuration, not figures.
const SHRINKER_CONFIG: &[&str] = &["seeks", "batch"];

/// The numeric figures of a `policy_result`, flattened: top-level numbers
/// (`direct_reclaim_stalls`), per-shrinker counters (`xfs_inode.scanned`)
/// and the inode cache's (`inode_cache.reclaimed`). Configuration (`config`,
/// `knobs`, `ram`, `cpus`) and text are left out.
pub fn figures(result: &Map<String, Value>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (k, v) in result {
        match v {
            Value::Number(n) if !NOT_FIGURES.contains(&k.as_str()) && k != "repeat" => {
                if let Some(x) = n.as_f64() {
                    out.push((k.clone(), x));
                }
            }
            Value::Array(items) if k == "shrinkers" => {
                for s in items.iter().filter_map(Value::as_object) {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or("shrinker");
                    for (f, x) in s {
                        if let (Some(x), false) =
                            (x.as_f64(), SHRINKER_CONFIG.contains(&f.as_str()))
                        {
                            out.push((format!("{name}.{f}"), x));
                        }
                    }
                }
            }
            Value::Object(m) if k == "inode_cache" => {
                for (f, x) in m {
                    if let Some(x) = x.as_f64() {
                        out.push((format!("{k}.{f}"), x));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `s` with HTML's special characters escaped.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// A number for a table: integers as such, others with up to 3 decimals.
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
