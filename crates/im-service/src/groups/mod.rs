//! Groups on an IM service node (docs/groups.md):
//!
//! - [`cache`]: the membership cache the send path, sync and fan-out read;
//! - [`watcher`]: keeps it current from `membership_change`;
//! - [`service`]: the `Groups` port — boundary stamping in front of the
//!   group directory;
//! - [`grpc`]: the `im.v1.GroupService` server.

pub mod cache;
pub mod grpc;
pub mod service;
pub mod watcher;

pub use cache::{GroupView, MembershipCache};
pub use service::GroupsService;
pub use watcher::MembershipWatcher;
