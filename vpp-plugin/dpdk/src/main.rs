//! vrouter-dpdk.
fn main() {}
