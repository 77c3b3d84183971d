//! Generates the sonde.v1 messages and gRPC stubs. protoc comes from the
//! `protoc-bin-vendored` crate, so nothing needs to be installed first.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=sonde");
    println!("cargo:rerun-if-changed=prometheus");
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_protos(&["sonde/v1/report.proto", "sonde/v1/query.proto"], &["."])?;
    // Remote write's messages: plain prost types, no service.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&["prometheus/remote.proto"], &["."])?;
    Ok(())
}
