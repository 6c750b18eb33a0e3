//! Policy compiler: tenant rules over groups, tags, nodes and CIDRs to per-node inbound packet filters (pure, no I/O)
