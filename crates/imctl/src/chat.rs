//! `imctl chat`: a two-way conversation with one user on a terminal or a pipe.
//!
//! stdout gets the conversation (`[HH:MM:SS] <from>: text`, `✓ seq N`,
//! `read up to N`); stderr gets status and errors, so a script can read the
//! conversation alone. Incoming messages are shown in seq order (gaps filled
//! by sync) and marked read.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use im_core::{ConversationId, UserId};
use im_proto::client;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::{ChatArgs, GlobalArgs};
use crate::client::{Client, Event, random_client_msg_id};
use crate::commands::{connect_options, show_in_order};
use crate::error::RemoteError;
use crate::output::chat_line;
use crate::timeline::Timeline;

/// The conversation with the peer, once known (from the list, an ack, or a push).
#[derive(Debug)]
struct Session {
    peer: u64,
    conversation: Option<String>,
    /// This side's read position in the conversation.
    read_seq: u64,
}

impl Session {
    /// Whether `conversation_id` is the private conversation with the peer.
    fn is_ours(&self, conversation_id: &str) -> bool {
        match &self.conversation {
            Some(c) => c == conversation_id,
            None => conversation_id.parse::<ConversationId>().is_ok_and(|c| c.has_member(UserId(self.peer))),
        }
    }
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

pub async fn chat(global: &GlobalArgs, args: ChatArgs) -> anyhow::Result<()> {
    let (client, mut events) = Client::connect(&connect_options(global, &args.connect)).await?;
    let mut session = Session { peer: args.to, conversation: None, read_seq: 0 };
    let mut timeline = Timeline::new(0);

    let list = client.list_conversations().await?;
    if let Some(summary) = list.iter().find(|c| c.peer == args.to) {
        let id = summary.conversation_id.clone();
        let after = summary.max_seq.saturating_sub(args.history);
        session.read_seq = summary.read_seq;
        timeline.start(&id, after);
        let mut newest_from_peer = 0;
        client
            .sync_all(&id, after, 0, |m| {
                say(&chat_line(&m))?;
                timeline.shown(&id, m.seq);
                if m.from_user == args.to {
                    newest_from_peer = m.seq;
                }
                Ok(())
            })
            .await?;
        session.conversation = Some(id);
        mark_read(&client, &mut session, newest_from_peer).await;
    }
    eprintln!("chatting with user {}: type a line and press Enter to send it; Ctrl-D ends", args.to);

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
                Some(event) => on_event(&client, &mut session, &mut timeline, event).await?,
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
    let request = client::SendRequest {
        to_user: session.peer,
        client_msg_id: random_client_msg_id(),
        body: text.as_bytes().to_vec().into(),
        content_type: "text/plain".into(),
    };
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

async fn on_event(client: &Client, session: &mut Session, timeline: &mut Timeline, event: Event) -> anyhow::Result<()> {
    match event {
        Event::Message(m) if session.is_ours(&m.conversation_id) => {
            session.conversation.get_or_insert_with(|| m.conversation_id.clone());
            let peer = session.peer;
            let mut newest_from_peer = 0;
            show_in_order(client, timeline, m, 0, |m| {
                say(&chat_line(m))?;
                if m.from_user == peer {
                    newest_from_peer = newest_from_peer.max(m.seq);
                }
                Ok(())
            })
            .await?;
            mark_read(client, session, newest_from_peer).await;
        }
        Event::Message(m) => eprintln!("(new message from user {} in {})", m.from_user, m.conversation_id),
        Event::Receipt(r)
            if r.reader == session.peer && session.conversation.as_deref() == Some(&r.conversation_id) =>
        {
            say(&format!("read up to {}", r.read_seq))?;
        }
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

    #[test]
    fn conversation_is_recognised_before_it_is_known() {
        let s = Session { peer: 7, conversation: None, read_seq: 0 };
        assert!(s.is_ours("p:3:7"));
        assert!(!s.is_ours("p:3:8"));
        assert!(!s.is_ours("garbage"));
        let s = Session { peer: 7, conversation: Some("p:3:7".into()), read_seq: 0 };
        assert!(s.is_ours("p:3:7"));
        assert!(!s.is_ours("p:5:7"));
    }
}
