//! vrouterd: the gateway's control sidecar.
