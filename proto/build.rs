//! Generates the Rust types, tonic services and proto3 JSON (pbjson) impls from proto/cvlan/v1,
//! plus a JSON Schema per message for the OpenAPI document, all from one protox descriptor set
//! (no system protoc).

use prost::Message;
use protox::prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};
use std::path::PathBuf;

const FILES: &[&str] = &[
    "cvlan/v1/entities.proto",
    "cvlan/v1/admin.proto",
    "cvlan/v1/node.proto",
    "cvlan/v1/gateway.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(FILES, ["."])?;
    let bytes = fds.encode_to_vec();
    std::fs::write(out.join("descriptor.bin"), &bytes)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        .build(&[".cvlan"])?;

    let pool = DescriptorPool::decode(bytes.as_slice())?;
    std::fs::write(
        out.join("schemas.json"),
        serde_json::to_vec_pretty(&schemas(&pool))?,
    )?;
    Ok(())
}

/// JSON Schemas following the proto3 canonical JSON mapping: camelCase names, enums by name,
/// 64-bit integers as strings, Timestamp as RFC 3339.
fn schemas(pool: &DescriptorPool) -> Value {
    let mut all = Map::new();
    for m in pool.all_messages() {
        if m.package_name() != "cvlan.v1" || m.is_map_entry() {
            continue;
        }
        all.insert(schema_name(&m), message_schema(&m));
    }
    Value::Object(all)
}

fn schema_name(m: &MessageDescriptor) -> String {
    m.full_name()
        .trim_start_matches("cvlan.v1.")
        .replace('.', "_")
}

fn message_schema(m: &MessageDescriptor) -> Value {
    let mut props = Map::new();
    for f in m.fields() {
        props.insert(f.json_name().to_string(), field_schema(&f));
    }
    let mut s = json!({"type": "object", "additionalProperties": false, "properties": props});
    let oneofs: Vec<Value> = m
        .oneofs()
        .filter(|o| !o.is_synthetic())
        .map(|o| json!({"oneof": o.name(), "fields": o.fields().map(|f| f.json_name().to_string()).collect::<Vec<_>>()}))
        .collect();
    if !oneofs.is_empty() {
        s["x-oneofs"] = Value::Array(oneofs);
    }
    s
}

fn field_schema(f: &FieldDescriptor) -> Value {
    if f.is_map()
        && let Kind::Message(entry) = f.kind()
    {
        let v = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": kind_schema(&v.kind())});
    }
    let k = kind_schema(&f.kind());
    if f.is_list() {
        json!({"type": "array", "items": k})
    } else {
        k
    }
}

fn kind_schema(k: &Kind) -> Value {
    match k {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>()})
        }
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.FieldMask" => {
                json!({"type": "string", "description": "comma-separated field paths"})
            }
            _ => json!({"$ref": format!("#/components/schemas/{}", schema_name(m))}),
        },
    }
}
