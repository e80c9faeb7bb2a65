//! Generates the gRPC code from `proto/` with the pure-Rust `protox` parser, so no
//! `protoc` is needed anywhere, and writes the descriptor set used by server reflection.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with `env!`: a build script compiled in one checkout
    // and reused from a shared CARGO_TARGET_DIR must still find *this* checkout.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "bulkhead/auth/v1/auth.proto",
        "bulkhead/tenant/v1/tenant.proto",
        "bulkhead/task/v1/task.proto",
        "bulkhead/task/v1/catalog.proto",
        "bulkhead/audit/v1/audit.proto",
    ];
    let fds = protox::compile(files, [&root])?;

    // `compile_fds` does not write `file_descriptor_set_path`: encode it here.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("bulkhead_descriptor.bin"), fds.encode_to_vec())?;

    // No default stubs: every service implements every RPC of its proto, so a
    // forgotten handler is a compile error, not an UNIMPLEMENTED at run time.
    tonic_prost_build::configure().compile_fds(fds)?;

    println!("cargo:rerun-if-changed={}", root.display());
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    Ok(())
}
