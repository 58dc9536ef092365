//! Compiles `proto/tollgate/v1/*.proto` with protox (pure Rust, no system protoc) into a
//! FileDescriptorSet and hands it to tonic-prost-build for the Rust code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tollgate/v1/common.proto",
        "proto/tollgate/v1/sidecar.proto",
        "proto/tollgate/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
