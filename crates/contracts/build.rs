//! Compiles the platform's .proto files with protox (pure Rust, no system protoc) and
//! generates prost messages and tonic clients/servers, plus the descriptor set used for
//! gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "plt/identity/v1/identity.proto",
        "plt/auth/v1/auth.proto",
        "plt/authz/v1/authz.proto",
        "plt/audit/v1/audit.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("plt_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
