//! Setting a run up: users (admin gRPC), groups (im.v1 gRPC, as their
//! owners) and WebSocket connections, each with bounded concurrency and a
//! progress line.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

use super::layout::GroupLayout;
use super::progress::Setup;
use crate::admin::Admin;
use crate::client::{self, ConnectOptions, WsStream};
use crate::group::GroupApi;

/// Members named by one CreateGroup or AddMembers call: large groups are
/// filled in several calls, each a small transaction and a small change record.
pub const MEMBERS_PER_CALL: usize = 1_000;

/// Creates `count` users named `{prefix}-{i}`; returns (id, token) in order.
pub async fn create_users(
    admin: &Admin,
    prefix: &str,
    count: u32,
    concurrency: usize,
    progress: bool,
) -> anyhow::Result<Vec<(u64, String)>> {
    let progress = &Setup::start("creating users", u64::from(count), progress);
    futures::stream::iter(0..count)
        .map(|i| {
            let mut admin = admin.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let created = match admin.create_user(&name).await {
                    Ok(created) => created,
                    Err(e) => {
                        if let Some(hint) = admin.hint_for(&e) {
                            eprintln!("hint: {hint}");
                        }
                        return Err(anyhow::Error::from(e).context(format!("creating user {name}")));
                    }
                };
                let user = created.user.with_context(|| format!("CreateUser({name}) returned no user"))?;
                progress.add(1);
                Ok((user.id, created.token))
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// Opens one WebSocket per entry of `options`, in order. `whose(i)` names
/// the user of connection i for errors.
pub async fn connect_all(
    options: &[ConnectOptions],
    concurrency: usize,
    progress: bool,
    whose: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<WsStream>> {
    let progress = &Setup::start("opening connections", options.len() as u64, progress);
    let whose = &whose;
    futures::stream::iter(options.iter().enumerate())
        .map(|(i, opts)| async move {
            let ws = client::connect_raw(opts).await.map_err(|e| {
                let hint = if format!("{e:#}").contains("Too many open files") {
                    " (raise the open file limit, e.g. `ulimit -n 65536`)"
                } else {
                    ""
                };
                e.context(format!("opening connection {i} ({}){hint}", whose(i)))
            })?;
            progress.add(1);
            Ok(ws)
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// Creates the groups of `layout` over `channel`, each by its owner (its
/// first member, whose token is in `users`), named `{prefix}-g{i}`, and
/// checks each has every member. Returns the group ids in order.
pub async fn create_groups(
    channel: &Channel,
    users: &[(u64, String)],
    layout: GroupLayout,
    prefix: &str,
    concurrency: usize,
    progress: bool,
) -> anyhow::Result<Vec<u64>> {
    let progress = &Setup::start("creating groups (members added)", u64::from(layout.users()), progress);
    let size = layout.size as usize;
    futures::stream::iter(0..layout.groups as usize)
        .map(|g| {
            let members = &users[g * size..(g + 1) * size];
            let name = format!("{prefix}-g{g}");
            async move {
                let id = create_group(channel, members, &name, progress).await?;
                Ok::<_, anyhow::Error>(id)
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// One group of `members` (the first owns it), filled in chunks.
async fn create_group(
    channel: &Channel,
    members: &[(u64, String)],
    name: &str,
    progress: &Setup,
) -> anyhow::Result<u64> {
    let (owner, others) = members.split_first().context("a group needs an owner")?;
    let mut api = GroupApi::on(channel.clone(), &owner.1)?;
    let ids: Vec<u64> = others.iter().map(|(id, _)| *id).collect();
    let mut chunks = ids.chunks(MEMBERS_PER_CALL);
    let first = chunks.next().unwrap_or_default().to_vec();
    let added = first.len() as u64 + 1;
    let roster = api.create_group(name, first, false).await.with_context(|| format!("creating group {name}"))?;
    let id = roster.group.map(|g| g.id).with_context(|| format!("CreateGroup({name}) returned no group"))?;
    progress.add(added);
    for chunk in chunks {
        let change = api.add_members(id, chunk.to_vec()).await;
        change.with_context(|| format!("adding members to group {id} ({name})"))?;
        progress.add(chunk.len() as u64);
    }
    let roster = api.members(id).await.with_context(|| format!("listing the members of group {id} ({name})"))?;
    if roster.members.len() != members.len() {
        anyhow::bail!(
            "group {id} ({name}) has {} members after set-up, expected {}",
            roster.members.len(),
            members.len()
        );
    }
    Ok(id)
}
