// Patched for im-service (see PATCHED.md): the .proto files are compiled by
// protox, in Rust, instead of by a `protoc` found on the machine, so building
// needs no protobuf compiler. The generated code is the same.

use prost::Message;

#[cfg(feature = "build-server")]
fn should_build_server() -> bool {
    true
}

#[cfg(not(feature = "build-server"))]
fn should_build_server() -> bool {
    false
}

fn main() {
    let proto_root = "proto";
    println!("cargo:rerun-if-changed={proto_root}");

    let protos = [
        "proto/etcd/api/authpb/auth.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
        "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    ];
    let descriptors = protox::compile(protos, [proto_root]).expect("Failed to parse proto files");
    let descriptor_path = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("etcd.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec()).expect("Failed to write the descriptor set");

    tonic_prost_build::configure()
        .build_server(should_build_server())
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&protos, &[proto_root])
        .expect("Failed to compile proto files");
}
