//! Links every kernel binary (demo, test kernels, examples) with our linker
//! script, which places the image at 1 MiB and emits the PVH note segment.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg=-T{dir}/src/arch/x86_64/linker.ld");
        println!("cargo:rerun-if-changed=src/arch/x86_64/linker.ld");
    }
}
