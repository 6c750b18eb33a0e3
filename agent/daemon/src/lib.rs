//! cvlan-agent daemon and cvlan CLI: joins a device to a CVLAN and keeps its tunnels in sync
