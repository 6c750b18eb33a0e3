//! Network-namespace lab: underlay bridge, one namespace per host, guaranteed teardown.
