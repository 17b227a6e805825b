//! The one-shot client commands: `send`, `sync`, `conversations`, `read`.
//! Each connects, does its requests, prints JSON lines on stdout, and closes.

use anyhow::bail;
use im_proto::client;

use crate::cli::{ConnectArgs, ConversationsArgs, GlobalArgs, ReadArgs, SendArgs, SyncArgs};
use crate::client::{Client, ConnectOptions, Event, Events, random_client_msg_id};
use crate::output::{self, AckJson, ConversationJson, MessageJson, ReadJson};
use crate::timeline::{Step, Timeline};
use crate::users::UserNames;

pub fn connect_options(global: &GlobalArgs, connect: &ConnectArgs) -> ConnectOptions {
    ConnectOptions {
        url: global.ws_url.clone(),
        token: connect.auth.token.clone(),
        device: connect.device.clone(),
        timeout: global.timeout,
        ca: global.ca.clone(),
    }
}

/// `imctl send`.
pub async fn send(global: &GlobalArgs, args: SendArgs) -> anyhow::Result<()> {
    let recipient = args.recipient.resolve(&mut UserNames::new(global, &args.connect.auth.token)).await?;
    let (client, _events) = Client::connect(&connect_options(global, &args.connect)).await?;
    let request = recipient.message(
        args.client_msg_id.unwrap_or_else(random_client_msg_id),
        args.text.into_bytes().into(),
        args.content_type,
    );
    let ack = client.send(request).await?;
    output::json_line(&mut std::io::stdout().lock(), &AckJson::from(&ack))?;
    client.close().await;
    Ok(())
}

/// `imctl conversations`.
pub async fn conversations(global: &GlobalArgs, args: ConversationsArgs) -> anyhow::Result<()> {
    let (client, _events) = Client::connect(&connect_options(global, &args.connect)).await?;
    let list = client.list_conversations().await?;
    let mut out = std::io::stdout().lock();
    for c in &list.conversations {
        output::json_line(&mut out, &ConversationJson::from(c))?;
    }
    drop(out);
    if list.groups_unchecked {
        eprintln!(
            "warning: the server could not reach its group directory: some groups may be missing; try again later"
        );
    }
    client.close().await;
    Ok(())
}

/// `imctl read`.
pub async fn read(global: &GlobalArgs, args: ReadArgs) -> anyhow::Result<()> {
    let (client, _events) = Client::connect(&connect_options(global, &args.connect)).await?;
    let read = client.mark_read(&args.conversation, args.seq).await?;
    let json = ReadJson { conversation_id: &read.conversation_id, read_seq: read.read_seq };
    output::json_line(&mut std::io::stdout().lock(), &json)?;
    client.close().await;
    Ok(())
}

/// `imctl sync`.
pub async fn sync(global: &GlobalArgs, args: SyncArgs) -> anyhow::Result<()> {
    let (client, mut events) = Client::connect(&connect_options(global, &args.connect)).await?;
    let conversations = match &args.conversation {
        Some(id) => vec![id.clone()],
        None => client.list_conversations().await?.conversations.into_iter().map(|c| c.conversation_id).collect(),
    };
    let mut timeline = Timeline::new(args.after);
    let print = |m: &client::Message| output::json_line(&mut std::io::stdout().lock(), &MessageJson::from(m));
    for id in &conversations {
        timeline.start(id, args.after);
        client
            .sync_all(id, args.after, args.limit, |m| {
                print(&m)?;
                timeline.shown(id, m.seq);
                Ok(())
            })
            .await?;
    }
    if args.follow {
        follow(&client, &mut events, &mut timeline, args.conversation.as_deref(), args.limit, print).await?;
    }
    client.close().await;
    Ok(())
}

/// Prints pushed messages (of `only`, if given) until Ctrl-C.
async fn follow(
    client: &Client,
    events: &mut Events,
    timeline: &mut Timeline,
    only: Option<&str>,
    limit: u32,
    mut print: impl FnMut(&client::Message) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            event = events.recv() => match event {
                None => bail!("{}", events.close_reason().unwrap_or_else(|| "connection closed".into())),
                Some(Event::Message(m)) if only.is_none_or(|c| c == m.conversation_id) => {
                    show_in_order(client, timeline, m, limit, |m| Ok(print(m)?)).await?;
                }
                Some(Event::Error(e)) => eprintln!("warning: the server reported {e}"),
                Some(_) => {}
            },
        }
    }
}

/// Shows a pushed message in its place: fills a gap before it by sync first,
/// skips it if it was shown already. See [`Timeline`].
pub async fn show_in_order(
    client: &Client,
    timeline: &mut Timeline,
    message: client::Message,
    limit: u32,
    mut show: impl FnMut(&client::Message) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let id = message.conversation_id.clone();
    match timeline.step(&id, message.seq) {
        Step::Skip => {}
        Step::Show => {
            show(&message)?;
            timeline.shown(&id, message.seq);
        }
        Step::SyncAfter(after) => {
            client
                .sync_all(&id, after, limit, |synced| {
                    if timeline.is_new(&id, synced.seq) {
                        show(&synced)?;
                        timeline.shown(&id, synced.seq);
                    }
                    Ok(())
                })
                .await?;
            if timeline.is_new(&id, message.seq) {
                show(&message)?;
                timeline.shown(&id, message.seq);
            }
        }
    }
    Ok(())
}
