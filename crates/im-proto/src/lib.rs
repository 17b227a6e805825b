//! Generated code for the wire contract in `proto/`. Module paths follow the
//! protobuf packages:
//!
//! - [`im::client::v1`]: the WebSocket client protocol.
//! - [`im::v1`]: the IM Service gRPC API.
//! - [`im::gateway::v1`]: the Gateway push API.
//! - [`im::user::v1`]: the User Service gRPC API.
//! - [`im::offline::v1`]: the records of the `offline_msg` topic.
//! - [`im::fanout::v1`]: the records of the `group_msg` topic.
//! - [`im::audit::v1`]: the `content_audit` records and the admin API that
//!   lists them.
//! - [`im::keys::v1`]: the admin API of encryption at rest's data keys.
#![allow(clippy::all, missing_docs)]

pub mod im {
    pub mod v1 {
        tonic::include_proto!("im.v1");
    }
    pub mod client {
        pub mod v1 {
            tonic::include_proto!("im.client.v1");
            // serde in proto3's JSON mapping (pbjson-build).
            include!(concat!(env!("OUT_DIR"), "/im.client.v1.serde.rs"));
        }
    }
    pub mod gateway {
        pub mod v1 {
            tonic::include_proto!("im.gateway.v1");
        }
    }
    pub mod user {
        pub mod v1 {
            tonic::include_proto!("im.user.v1");
        }
    }
    pub mod offline {
        pub mod v1 {
            tonic::include_proto!("im.offline.v1");
        }
    }
    pub mod fanout {
        pub mod v1 {
            tonic::include_proto!("im.fanout.v1");
        }
    }
    pub mod audit {
        pub mod v1 {
            tonic::include_proto!("im.audit.v1");
        }
    }
    pub mod keys {
        pub mod v1 {
            tonic::include_proto!("im.keys.v1");
        }
    }
}

pub use im::audit::v1 as audit;
pub use im::keys::v1 as keys;

pub use im::client::v1 as client;
pub use im::fanout::v1 as fanout;
pub use im::gateway::v1 as gateway;
pub use im::offline::v1 as offline;
pub use im::user::v1 as user;
pub use im::v1 as message;

pub mod convert;
