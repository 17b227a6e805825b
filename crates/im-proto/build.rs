//! Compiles the wire contract in `proto/` with protox, a protobuf compiler
//! written in Rust, so building needs no `protoc` on the machine (issue 11).

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let files = [
        "im/client/v1/client.proto",
        "im/v1/message.proto",
        "im/gateway/v1/push.proto",
        "im/user/v1/user.proto",
        "im/offline/v1/offline.proto",
        "im/user/v1/group.proto",
        "im/v1/group.proto",
        "im/fanout/v1/fanout.proto",
        "im/audit/v1/audit.proto",
        "im/keys/v1/keys.proto",
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("{root}/{f}")).collect();
    let descriptors = protox::compile(&paths, [root])?;
    let descriptor_path = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("im.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .bytes(".im.client.v1")
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&paths, &[root.to_string()])?;
    // serde for the client protocol: its proto3 JSON mapping, spoken by
    // browsers over the gateway's im.v1.json subprotocol.
    pbjson_build::Builder::new().register_descriptors(&descriptors.encode_to_vec())?.build(&[".im.client.v1"])?;
    println!("cargo:rerun-if-changed={root}");
    Ok(())
}
