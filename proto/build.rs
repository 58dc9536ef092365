//! Compiles `proto/tollgate/v1/*.proto` with protox (pure Rust, no system protoc) into a
//! FileDescriptorSet and hands it to tonic-prost-build for the Rust code; the encoded set is
//! also written to `OUT_DIR` (exported as `FILE_DESCRIPTOR_SET`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tollgate/v1/common.proto",
        "proto/tollgate/v1/sidecar.proto",
        "proto/tollgate/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)?;
    // The encoded descriptors (with comments) are exported as `FILE_DESCRIPTOR_SET`: the
    // authority's HTTP/JSON API maps JSON to messages and writes its OpenAPI document
    // from them, so neither can drift from the .proto files.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tollgate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        // Our codec: a body that does not decode is INVALID_ARGUMENT, not INTERNAL
        // (src/codec.rs).
        .codec_path("crate::codec::TollgateCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
