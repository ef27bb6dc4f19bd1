//! Generates the gRPC code and the reflection descriptor set from the frozen
//! contract in `proto/`. protoc comes from `protoc-bin-vendored`, so a fresh
//! machine needs no system protoc.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the env.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let include = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = PathBuf::from("../proto");
    let proto = proto_root.join("pravah/engine/v1/engine.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("engine_descriptor.bin"))
        .compile_protos(&[proto], &[proto_root, include])?;
    Ok(())
}
