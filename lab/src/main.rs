//! `cargo lab`: the reclaim lab. Runs a sweep of kreclaim kernels in QEMU
//! (the Cartesian product of the settings, each repeated), keeps every
//! result and sample, summarises each figure per combination with a 95%
//! confidence interval, draws a self-contained HTML report, and compares two
//! sweeps the way mmtests' compare-kernels does. See docs/lab.md.

mod chart;
mod compare;
mod data;
mod report;
mod stats;
mod summary;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The command line.
#[derive(Parser)]
#[command(
    name = "cargo lab",
    bin_name = "cargo lab",
    version,
    about = "The reclaim lab: sweeps of kreclaim runs in QEMU with repeats, statistics, plots and comparisons"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the Cartesian product of the --set values, each combination
    /// --repeat times, and write DIR/runs.jsonl, DIR/summary.csv and
    /// DIR/report.html. Runs already finished in DIR are not run again.
    Sweep(sweep::SweepArgs),
    /// Write DIR/summary.csv and DIR/report.html again from DIR/runs.jsonl.
    Report {
        /// The sweep's output directory.
        dir: PathBuf,
    },
    /// Compare two sweeps figure by figure: both means, the change in %,
    /// and whether it is significant (Welch's t-test, 95%).
    Compare {
        /// The baseline sweep's directory.
        dir_a: PathBuf,
        /// The sweep compared with it.
        dir_b: PathBuf,
        /// Show figures that are the same constant in every run too.
        #[arg(long)]
        all: bool,
    },
    /// Write one figure's chart (as in the report) to a standalone SVG file.
    Chart {
        /// The sweep's output directory.
        dir: PathBuf,
        /// The figure, as named in summary.csv (e.g. direct_reclaim_stalls).
        figure: String,
        /// Where to write the SVG.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Sweep(args) => sweep::sweep(args),
        Cmd::Report { dir } => data::Dataset::load(&dir).and_then(|d| {
            summary::write(&d, &dir.join("summary.csv"))?;
            report::write(&d, &dir.join("report.html"))?;
            eprintln!(
                "lab: wrote {} and {}",
                dir.join("summary.csv").display(),
                dir.join("report.html").display()
            );
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Compare { dir_a, dir_b, all } => compare::compare(&dir_a, &dir_b, all),
        Cmd::Chart {
            dir,
            figure,
            output,
        } => data::Dataset::load(&dir).and_then(|d| {
            let svg = report::figure_svg(&d, &figure)?;
            std::fs::write(&output, svg)
                .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
            eprintln!("lab: wrote {}", output.display());
            Ok(ExitCode::SUCCESS)
        }),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::from(2)
        }
    }
}
