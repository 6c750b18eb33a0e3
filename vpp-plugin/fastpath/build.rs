//! Compiles the C test driver (tests/c/driver.c) and the VPP plugin's glue
//! (../plugin/cvlan_glue.c) against the public header with the `cc` crate. Only the
//! integration tests `c_driver` and `vpp_glue` link them (via `#[link]`); nothing is added to
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
    // The VPP plugin's VPP-independent glue (tests/vpp_glue.rs): compiled here so CI checks it
    // against this header without VPP installed.
    println!("cargo:rerun-if-changed=../plugin/cvlan_glue.c");
    println!("cargo:rerun-if-changed=../plugin/cvlan_glue.h");
    cc::Build::new()
        .file("../plugin/cvlan_glue.c")
        .include("include")
        .include("../plugin")
        .std("c11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .cargo_metadata(false)
        .compile("cvlan_vpp_glue");
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    println!("cargo:rustc-link-search=native={out}");
}
