//! `imctl chat`: a conversation with one user, or in one group, on a
//! terminal or a pipe.
//!
//! stdout gets the conversation (`[HH:MM:SS] <from>: text`, `✓ seq N`, and in
//! a private chat the peer's `read up to N`); stderr gets status and errors,
//! so a script can read the conversation alone. Incoming messages are shown
//! in seq order (gaps filled by sync) and marked read. `<from>` is the
//! sender's name from the user directory (cached for the session), or
//! `user 17` when it cannot be found: a name is never worth a lost line.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use im_core::{ConversationId, UserId};
use im_proto::client;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::{ChatArgs, GlobalArgs};
use crate::client::{Client, Event, Recipient, random_client_msg_id};
use crate::commands::{connect_options, show_in_order};
use crate::error::RemoteError;
use crate::output::chat_line;
use crate::timeline::Timeline;
use crate::users::UserNames;

/// The conversation with the peer or in the group, once known (a group's
/// from the start; a private one's from the list, an ack, or a push).
#[derive(Debug)]
struct Session {
    with: Recipient,
    conversation: Option<String>,
    /// This side's read position in the conversation.
    read_seq: u64,
}

impl Session {
    fn new(with: Recipient) -> Self {
        Self { with, conversation: with.group_conversation(), read_seq: 0 }
    }

    /// Whether `conversation_id` is this chat's conversation.
    fn is_ours(&self, conversation_id: &str) -> bool {
        match (&self.conversation, self.with) {
            (Some(c), _) => c == conversation_id,
            (None, Recipient::User(peer)) => {
                conversation_id.parse::<ConversationId>().is_ok_and(|c| c.is_pair_member(UserId(peer)))
            }
            (None, Recipient::Group(_)) => false,
        }
    }

    /// Whether this chat's entry of the conversation list is `c`.
    fn is_listed_as(&self, c: &client::ConversationSummary) -> bool {
        match self.with {
            Recipient::User(peer) => c.group_id == 0 && c.peer == peer,
            Recipient::Group(group) => c.group_id == group || self.is_ours(&c.conversation_id),
        }
    }

    /// Whether showing `m` moves the read position: the peer's messages in a
    /// private chat, any member's in a group (our own were read when written).
    fn reads(&self, m: &client::Message) -> bool {
        match self.with {
            Recipient::User(peer) => m.from_user == peer,
            Recipient::Group(_) => true,
        }
    }

    /// The newest of `shown` that moves the read position (0: none does).
    fn newest_read(&self, shown: &[client::Message]) -> u64 {
        shown.iter().filter(|m| self.reads(m)).map(|m| m.seq).max().unwrap_or(0)
    }

    /// Whether a receipt is worth a line: the peer read our messages. In a
    /// group, receipts only come from our own other devices.
    fn shows_receipt(&self, r: &client::ReadReceipt) -> bool {
        match self.with {
            Recipient::User(peer) => r.reader == peer && self.conversation.as_deref() == Some(&r.conversation_id),
            Recipient::Group(_) => false,
        }
    }
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Prints `messages` as chat lines with their senders' names. They are
/// gathered first and printed here because a sync's callback cannot wait for
/// the user directory.
async fn say_messages(names: &mut UserNames<'_>, messages: &[client::Message]) -> std::io::Result<()> {
    for m in messages {
        say(&chat_line(m, &names.name_of(m.from_user).await))?;
    }
    Ok(())
}

/// The status line of the start: who this chat is with.
async fn describe(with: Recipient, names: &mut UserNames<'_>) -> String {
    match with {
        Recipient::User(peer) => format!("chatting with {}", names.label(peer).await),
        Recipient::Group(group) => format!("chatting in group {group}"),
    }
}

pub async fn chat(global: &GlobalArgs, args: ChatArgs) -> anyhow::Result<()> {
    let mut names = UserNames::new(global, &args.connect.auth.token);
    let recipient = args.with.resolve(&mut names).await?;
    let (client, mut events) = Client::connect(&connect_options(global, &args.connect)).await?;
    let mut session = Session::new(recipient);
    let mut timeline = Timeline::new(0);

    let list = client.list_conversations().await?;
    if let Some(summary) = list.conversations.iter().find(|c| session.is_listed_as(c)) {
        let id = summary.conversation_id.clone();
        let after = summary.max_seq.saturating_sub(args.history);
        session.read_seq = summary.read_seq;
        timeline.start(&id, after);
        let mut shown = Vec::new();
        client
            .sync_all(&id, after, 0, |m| {
                timeline.shown(&id, m.seq);
                shown.push(m);
                Ok(())
            })
            .await?;
        say_messages(&mut names, &shown).await?;
        session.conversation = Some(id);
        let newest_read = session.newest_read(&shown);
        mark_read(&client, &mut session, newest_read).await;
    } else if let Recipient::Group(group) = session.with {
        eprintln!("warning: group {group} is not among your conversations; are you a member?");
    }
    eprintln!("{}: type a line and press Enter to send it; Ctrl-D ends", describe(session.with, &mut names).await);

    let mut lines = stdin_lines();
    let mut stdin_open = true;
    let mut linger_until: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let linger = async {
            match linger_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = linger => break,
            line = lines.recv(), if stdin_open => match line {
                None if args.linger.is_zero() => break,
                None => {
                    stdin_open = false;
                    linger_until = Some(Instant::now() + args.linger);
                }
                Some(text) => send_line(&client, &mut session, &mut timeline, &text).await?,
            },
            event = events.recv() => match event {
                None => bail!("{}", events.close_reason().unwrap_or_else(|| "connection closed".into())),
                Some(event) => on_event(&client, &mut session, &mut timeline, &mut names, event).await?,
            },
        }
    }
    client.close().await;
    Ok(())
}

async fn send_line(client: &Client, session: &mut Session, timeline: &mut Timeline, text: &str) -> anyhow::Result<()> {
    let text = text.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Ok(());
    }
    let request = session.with.message(random_client_msg_id(), text.as_bytes().to_vec().into(), "text/plain".into());
    match client.send(request).await {
        Ok(ack) => {
            // Our own message is known: a later push must not look like a gap.
            timeline.shown(&ack.conversation_id, ack.seq);
            session.conversation.get_or_insert(ack.conversation_id);
            say(&format!("✓ seq {}", ack.seq))?;
        }
        // Refused messages (too long, blocked word, ...) do not end the chat.
        Err(e) if e.downcast_ref::<RemoteError>().is_some() => eprintln!("error: {e}"),
        Err(e) => return Err(e),
    }
    Ok(())
}

async fn on_event(
    client: &Client,
    session: &mut Session,
    timeline: &mut Timeline,
    names: &mut UserNames<'_>,
    event: Event,
) -> anyhow::Result<()> {
    match event {
        Event::Message(m) if session.is_ours(&m.conversation_id) => {
            session.conversation.get_or_insert_with(|| m.conversation_id.clone());
            let mut shown = Vec::new();
            show_in_order(client, timeline, m, 0, |m| {
                shown.push(m.clone());
                Ok(())
            })
            .await?;
            say_messages(names, &shown).await?;
            let newest_read = session.newest_read(&shown);
            mark_read(client, session, newest_read).await;
        }
        Event::Message(m) => {
            eprintln!("(new message from {} in {})", names.name_of(m.from_user).await, m.conversation_id);
        }
        Event::Receipt(r) if session.shows_receipt(&r) => say(&format!("read up to {}", r.read_seq))?,
        Event::Receipt(_) => {}
        Event::Error(e) => eprintln!("warning: the server reported {e}"),
    }
    Ok(())
}

/// Marks the conversation read up to `seq` if that moves the read position.
async fn mark_read(client: &Client, session: &mut Session, seq: u64) {
    let Some(id) = session.conversation.clone() else { return };
    if seq <= session.read_seq {
        return;
    }
    match client.mark_read(&id, seq).await {
        Ok(read) => session.read_seq = read.read_seq,
        Err(e) => eprintln!("warning: could not mark {id} read up to {seq}: {e:#}"),
    }
}

/// Lines of stdin, read on a plain thread: a blocking terminal read must not
/// hold up the runtime's shutdown (tokio's stdin would). Invalid UTF-8 is replaced.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf).context("reading stdin") {
                Ok(0) => return,
                Ok(_) => {
                    if tx.blocking_send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, peer: u64, group_id: u64) -> client::ConversationSummary {
        client::ConversationSummary { conversation_id: id.into(), peer, group_id, ..Default::default() }
    }

    #[test]
    fn conversation_is_recognised_before_it_is_known() {
        let s = Session::new(Recipient::User(7));
        assert!(s.is_ours("p:3:7"));
        assert!(!s.is_ours("p:3:8"));
        assert!(!s.is_ours("g:7"));
        assert!(!s.is_ours("garbage"));
        let s = Session { conversation: Some("p:3:7".into()), ..Session::new(Recipient::User(7)) };
        assert!(s.is_ours("p:3:7"));
        assert!(!s.is_ours("p:5:7"));
    }

    #[test]
    fn a_group_chat_knows_its_conversation_from_the_start() {
        let s = Session::new(Recipient::Group(7));
        assert!(s.is_ours("g:7"));
        assert!(!s.is_ours("p:3:7") && !s.is_ours("g:70"));
        assert!(s.is_listed_as(&summary("g:7", 0, 7)));
        assert!(!s.is_listed_as(&summary("p:3:7", 7, 0)));
        let private = Session::new(Recipient::User(7));
        assert!(private.is_listed_as(&summary("p:3:7", 7, 0)));
        assert!(!private.is_listed_as(&summary("g:7", 0, 7)));
    }

    #[test]
    fn what_is_marked_read_and_which_receipts_show() {
        let message = |from_user| client::Message { from_user, conversation_id: "g:7".into(), ..Default::default() };
        let receipt = |id: &str, reader| client::ReadReceipt { conversation_id: id.into(), reader, read_seq: 3 };
        let group = Session::new(Recipient::Group(7));
        assert!(group.reads(&message(3)) && group.reads(&message(9)));
        assert!(!group.shows_receipt(&receipt("g:7", 3)));
        let private = Session { conversation: Some("p:3:7".into()), ..Session::new(Recipient::User(7)) };
        assert!(private.reads(&message(7)) && !private.reads(&message(3)));
        let at = |seq, from_user| client::Message { seq, ..message(from_user) };
        assert_eq!(private.newest_read(&[at(4, 7), at(5, 3), at(6, 7), at(7, 3)]), 6);
        assert_eq!(private.newest_read(&[at(5, 3)]), 0);
        assert_eq!(group.newest_read(&[at(4, 7), at(5, 3)]), 5);
        assert!(private.shows_receipt(&receipt("p:3:7", 7)));
        assert!(!private.shows_receipt(&receipt("p:3:7", 3)) && !private.shows_receipt(&receipt("p:7:9", 7)));
    }
}
