//! Binds Debian's libdpdk (22.11) for vrouter-dpdk: flags from `pkg-config libdpdk`, bindgen
//! over `csrc/wrapper.h` (allowlisted to the EAL/ethdev/mbuf items the host uses; output cached
//! in OUT_DIR, regenerated only when these inputs change), and `csrc/shim.c` compiled with cc
//! for the `static inline` burst/mbuf functions that have no linkable symbol.

use std::path::PathBuf;
use std::process::Command;

fn pkg_config(arg: &str) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args([arg, "libdpdk"])
        .output()
        .unwrap_or_else(|e| panic!("running pkg-config: {e} (install pkg-config and libdpdk-dev)"));
    assert!(
        out.status.success(),
        "pkg-config {arg} libdpdk failed: {} (install libdpdk-dev)",
        String::from_utf8_lossy(&out.stderr)
    );
    // `-include rte_config.h` is two words: keep them together.
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut flags = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "-include" && i + 1 < words.len() {
            flags.push(format!("-include{}", words[i + 1]));
            i += 2;
        } else {
            flags.push(words[i].clone());
            i += 1;
        }
    }
    flags
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/wrapper.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let cflags = pkg_config("--cflags");
    let libs = pkg_config("--libs");

    // Link dynamically against the shared libraries (PMDs such as net_af_packet are loaded
    // by the EAL from its plugin directory at run time).
    for l in &libs {
        if let Some(name) = l.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={name}");
        } else if let Some(dir) = l.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }

    let mut cc = cc::Build::new();
    cc.file("csrc/shim.c").include("csrc").opt_level(2);
    for f in &cflags {
        if let Some(h) = f.strip_prefix("-include") {
            cc.flag("-include").flag(h);
        } else {
            cc.flag(f);
        }
    }
    cc.compile("cvd_shim");

    let mut clang_args: Vec<String> = Vec::new();
    for f in &cflags {
        if let Some(h) = f.strip_prefix("-include") {
            clang_args.push("-include".into());
            clang_args.push(h.into());
        } else {
            clang_args.push(f.clone());
        }
    }
    clang_args.push("-Icsrc".into());

    let functions = [
        "rte_eal_init",
        "rte_eal_cleanup",
        "rte_lcore_count",
        "rte_get_main_lcore",
        "rte_get_next_lcore",
        "rte_eal_remote_launch",
        "rte_eal_wait_lcore",
        "rte_strerror",
        "rte_get_tsc_hz",
        "rte_socket_id",
        "rte_eth_dev_count_avail",
        "rte_eth_dev_get_port_by_name",
        "rte_eth_dev_info_get",
        "rte_eth_dev_configure",
        "rte_eth_rx_queue_setup",
        "rte_eth_tx_queue_setup",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_dev_close",
        "rte_eth_dev_socket_id",
        "rte_eth_promiscuous_enable",
        "rte_eth_macaddr_get",
        "rte_eth_stats_get",
        "rte_pktmbuf_pool_create",
        "rte_pktmbuf_free_bulk",
        "rte_mempool_free",
        "cvd_.*",
    ];
    let mut b = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_args(&clang_args)
        .allowlist_var("RTE_MAX_ETHPORTS|RTE_PKTMBUF_HEADROOM|RTE_MBUF_DEFAULT_BUF_SIZE")
        // The host never looks inside these: the shim reads mbuf fields, the PMD owns pools.
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in functions {
        b = b.allowlist_function(f);
    }
    let bindings = b.generate().expect("bindgen over csrc/wrapper.h");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("writing dpdk_bindings.rs");
}
