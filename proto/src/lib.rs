//! CloudVLAN protobuf contracts — the one source of truth for every entity and RPC.
//!
//! Generated at build time from `proto/cvlan/v1/*.proto` with protox (no system protoc):
//! prost messages, tonic clients and servers, and proto3 canonical JSON via pbjson, which is
//! what the REST API speaks.

/// `cvlan.v1`: entities, the admin, node and gateway services.
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/cvlan.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/cvlan.v1.serde.rs"));
}

pub use pbjson_types;

/// Encoded `FileDescriptorSet` of every CloudVLAN proto file (for reflection and tooling).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// JSON Schema of every `cvlan.v1` message under its short name, following the proto3 JSON
/// mapping; the API's OpenAPI document uses them as components.
pub const SCHEMAS_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/schemas.json"));
