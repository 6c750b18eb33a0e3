//! Compiles the C test driver (tests/c/driver.c) against the public header with the `cc`
//! crate. Only the integration test `c_driver` links it (via `#[link]`); nothing is added to
//! the library's own link line.

fn main() {
    println!("cargo:rerun-if-changed=tests/c/driver.c");
    println!("cargo:rerun-if-changed=include/cvlan_fastpath.h");
    cc::Build::new()
        .file("tests/c/driver.c")
        .include("include")
        .std("c11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .cargo_metadata(false)
        .compile("cvlan_c_driver");
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    println!("cargo:rustc-link-search=native={out}");
}
