//! Generates the gRPC code from `proto/` with the pure-Rust `protox` parser, so no
//! `protoc` is needed anywhere, and writes the descriptor set used by server reflection.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "bulkhead/auth/v1/auth.proto",
        "bulkhead/tenant/v1/tenant.proto",
        "bulkhead/task/v1/task.proto",
        "bulkhead/audit/v1/audit.proto",
    ];
    let fds = protox::compile(files, [&root])?;

    // `compile_fds` does not write `file_descriptor_set_path`: encode it here.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("bulkhead_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // Services whose issue has not landed answer UNIMPLEMENTED instead of
        // forcing stub code into every crate.
        .generate_default_stubs(true)
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed={}", root.display());
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    Ok(())
}
