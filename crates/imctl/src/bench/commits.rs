//! The server's group commits over the measured window, read from its
//! Prometheus text (`im_commit_batch_size`, a histogram of messages per
//! commit): how many commits, how many messages each carried, how long
//! between them. At low rates a commit's fixed cost is paid for few
//! messages, so these figures explain the cost per message.

use anyhow::{Context, bail, ensure};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The histogram's running totals at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitCounters {
    commits: f64,
    messages: f64,
}

/// The commits of a measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Commits {
    pub commits: u64,
    pub messages_per_commit: f64,
    /// The window divided by the commits: one commit's time while the
    /// writer never waits.
    pub ms_per_commit: f64,
}

/// Reads the counters from `url` (`http://host:port/metrics`). The bench
/// talks to one server on loopback: plain HTTP/1.1, one request.
pub async fn read(url: &str) -> anyhow::Result<CommitCounters> {
    let text = get(url).await.with_context(|| format!("--server-metrics {url}"))?;
    parse(&text).with_context(|| format!("--server-metrics {url}"))
}

/// The figures between two readings taken `measured_s` apart.
pub fn between(before: CommitCounters, after: CommitCounters, measured_s: f64) -> Commits {
    let commits = (after.commits - before.commits).max(0.0);
    let messages = (after.messages - before.messages).max(0.0);
    Commits {
        commits: commits as u64,
        messages_per_commit: if commits > 0.0 { messages / commits } else { 0.0 },
        ms_per_commit: if commits > 0.0 { measured_s * 1e3 / commits } else { 0.0 },
    }
}

async fn get(url: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("http://") else { bail!("only http:// URLs are read") };
    let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, _)| (a, &rest[a.len()..]));
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response).context("the answer is not UTF-8")?;
    let (head, body) = response.split_once("\r\n\r\n").context("no end of the HTTP head")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    ensure!(status == "200", "HTTP status {status:?}");
    Ok(body.to_owned())
}

fn parse(text: &str) -> anyhow::Result<CommitCounters> {
    let value = |name: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no {name} in the metrics (metrics off, or not an im-service node?)"))?;
        line.trim().parse().with_context(|| format!("{name} is not a number: {line:?}"))
    };
    Ok(CommitCounters { commits: value("im_commit_batch_size_count")?, messages: value("im_commit_batch_size_sum")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# TYPE im_commit_batch_size histogram\n\
        im_commit_batch_size_sum 8250.0\n\
        im_commit_batch_size_count 10\n\
        im_commit_batch_size_bucket{le=\"1.0\"} 0\n";

    #[test]
    fn counters_come_from_the_histogram_totals() {
        assert_eq!(parse(SAMPLE).unwrap(), CommitCounters { commits: 10.0, messages: 8250.0 });
        assert!(parse("im_messages_accepted_total 3\n").is_err());
        assert!(parse("im_commit_batch_size_count x\nim_commit_batch_size_sum 1\n").is_err());
    }

    #[test]
    fn the_window_divides_into_commits() {
        let before = CommitCounters { commits: 10.0, messages: 100.0 };
        let after = CommitCounters { commits: 410.0, messages: 330_100.0 };
        let commits = between(before, after, 10.0);
        assert_eq!(commits.commits, 400);
        assert_eq!(commits.messages_per_commit, 825.0);
        assert_eq!(commits.ms_per_commit, 25.0);
        assert_eq!(between(after, after, 10.0).messages_per_commit, 0.0);
    }

    #[tokio::test]
    async fn only_plain_http_is_read() {
        assert!(read("https://127.0.0.1:8094/metrics").await.is_err());
    }
}
