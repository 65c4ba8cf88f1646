//! Compiles the `.proto` files with `protox` (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(["mamba/node/v1/node.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // File transfers hand their chunks on without copying them.
        .bytes(".mamba.node.v1")
        // Small stream buffers: the panel keeps one control stream per node (see `codec`).
        .codec_path("crate::codec::NodeCodec")
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .compile_fds(files)?;
    Ok(())
}
