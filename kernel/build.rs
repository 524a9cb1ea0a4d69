//! Link the firmware with the ROM layout in linker/veilboot.ld.
fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../linker/veilboot.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=src/arch/boot.S");
    println!("cargo:rustc-link-arg-bin=veilboot=-T{}", script.display());
    println!("cargo:rustc-link-arg-bin=veilboot=--gc-sections");
}
