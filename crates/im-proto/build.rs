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
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("{root}/{f}")).collect();
    tonic_prost_build::configure().bytes(".im.client.v1").compile_protos(&paths, &[root.to_string()])?;
    println!("cargo:rerun-if-changed={root}");
    Ok(())
}
