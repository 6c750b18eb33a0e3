//! Raw DPDK bindings (bindgen over `csrc/wrapper.h`, generated into OUT_DIR by build.rs).
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    missing_docs
)]

include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
