//! gRPC clients for the services this process reaches over the network when
//! they run as their own processes (production mode):
//!
//! - `channel`: one place that turns a `host:port` and a deadline into a
//!   tonic channel (lazy connect, TCP_NODELAY, per-call timeout).
//! - `credential`: the service credential these calls carry — a short-lived
//!   service token of the one scope the called API accepts (`push`,
//!   `users`, `groups`), signed with the shared secret and re-issued before
//!   it expires. Never an admin token.
//! - `pusher`: [`GrpcPusher`], the `Pusher` port over `im.gateway.v1`, one
//!   channel per gateway (the registry names gateways by their push address).
//! - `users`: [`RemoteUsers`], the `UserStore` port over `im.user.v1`.
//! - [`groups`]: [`groups::RemoteGroups`], the `GroupDirectory` port over
//!   `im.user.v1.GroupDirectory`.
//! - `messaging`: [`RemoteMessaging`], the `Messaging` port over `im.v1`, for a
//!   gateway process: sends go on the relay stream (`relay`), the other calls
//!   carry a token of the acting user.
//! - `group_service`: [`RemoteGroupService`], the `Groups` port over
//!   `im.v1.GroupService`, for a gateway process's clients.
//! - `acting_user`: [`ActingUser`], the user's token a gateway process's
//!   unary calls carry.
//! - `relay`: [`RelayClient`], a gateway's sends on one long-lived
//!   `im.v1.RelayService` stream, batched, with a credential of scope `relay`.
//!
//! Transport failures and deadlines map to `UNAVAILABLE` (G9): the caller
//! fails fast, and the lazy channel reconnects by itself when the peer is back.

mod acting_user;
mod channel;
mod credential;
mod group_service;
pub mod groups;
mod messaging;
mod pusher;
mod relay;
mod users;

pub use acting_user::ActingUser;
pub use channel::{backend_error, lazy_channel};
pub use credential::ServiceCredential;
pub use group_service::RemoteGroupService;
pub use messaging::RemoteMessaging;
pub use pusher::GrpcPusher;
pub use relay::RelayClient;
pub use users::RemoteUsers;
