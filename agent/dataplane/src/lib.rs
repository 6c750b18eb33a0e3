//! WireGuard data plane of cvlan-agent: boringtun sessions behind a sans-IO core, TUN and batched UDP I/O
