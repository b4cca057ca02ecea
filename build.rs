//! Links every kernel binary (demo, test kernels, examples) with our linker
//! script, which places the image at 1 MiB and emits the PVH note segment;
//! and embeds the git commit (`KRECLAIM_GIT_COMMIT`) that JSON results
//! carry: `git rev-parse --short HEAD`, or "unknown" without git or outside
//! a repository (a source tarball), which never fails the build.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg=-T{dir}/src/arch/x86_64/linker.ld");
        println!("cargo:rerun-if-changed=src/arch/x86_64/linker.ld");
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KRECLAIM_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit appends to logs/HEAD, a checkout
    // rewrites HEAD); `--git-dir` also finds a worktree's own directory.
    let git_dir = std::process::Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok());
    match git_dir {
        Some(d) => {
            let d = std::path::Path::new(d.trim());
            println!("cargo:rerun-if-changed={}", d.join("HEAD").display());
            println!("cargo:rerun-if-changed={}", d.join("logs/HEAD").display());
        }
        None => println!("cargo:rerun-if-changed=build.rs"),
    }
}
