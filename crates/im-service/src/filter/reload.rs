//! Reloading the word list without a restart: on SIGHUP, and when the file
//! changes. Changes are watched on the list's directory (the `notify`
//! crate), because editors and Kubernetes replace a file rather than write
//! it in place: a ConfigMap volume swaps its `..data` link, an editor renames
//! a new file over the old. Events are debounced ([`QUIET`]): one reload per
//! burst of writes, once the burst is over.
//!
//! A reload builds the new automaton on a blocking thread and swaps it in
//! whole ([`ContentFilter::reload`]); sends go on with the old list
//! meanwhile. A reload that fails keeps the old list and logs one error line
//! naming the path and the line.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ContentFilter;

/// How long the directory must stay quiet before a change is reloaded.
pub const QUIET: Duration = Duration::from_millis(300);

/// Whether a changed path can be the list: the file itself, or a
/// Kubernetes volume's `..data`-style link that points at it.
fn concerns_list(changed: &Path, list_name: &OsString) -> bool {
    match changed.file_name() {
        Some(name) => name == list_name || name.to_string_lossy().starts_with(".."),
        None => false,
    }
}

/// Starts watching; the task stops with `shutdown`.
pub fn spawn(filter: Arc<ContentFilter>, tracker: &TaskTracker, shutdown: CancellationToken) -> anyhow::Result<()> {
    let path = filter.path().to_owned();
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => ".".into(),
    };
    let list_name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
    // One pending signal is enough: a reload reads the file as it is then.
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Not opens and reads: a reload's own read of the list would
        // trigger the next reload, forever (seen with inotify's IN_OPEN).
        Ok(event) if !event.kind.is_access() && event.paths.iter().any(|p| concerns_list(p, &list_name)) => {
            let _ = changed_tx.try_send(());
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "watching the word list"),
    })
    .context("watching filter.wordlist_path (FILTER_WORDLIST_PATH)")?;
    watcher
        .watch(&directory, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {} for word-list changes", directory.display()))?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    tracker.spawn(async move {
        // Dropped when the task ends, which stops the watching.
        let _watcher = watcher;
        loop {
            let cause = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(()) = hangup.recv() => "SIGHUP",
                Some(()) = changed.recv() => {
                    // Wait for the burst to end: each new event restarts the wait.
                    while let Ok(Some(())) = tokio::time::timeout(QUIET, changed.recv()).await {}
                    "file changed"
                }
            };
            reload(&filter, cause).await;
        }
    });
    Ok(())
}

async fn reload(filter: &Arc<ContentFilter>, cause: &'static str) {
    let reloading = filter.clone();
    match tokio::task::spawn_blocking(move || reloading.reload()).await {
        Ok(Ok(entries)) => tracing::info!(entries, cause, "sensitive-word list reloaded"),
        // The error names the path and the line; never an entry.
        Ok(Err(error)) => tracing::error!(cause, "sensitive-word list not reloaded, the previous one stays: {error}"),
        Err(join) => tracing::error!(cause, error = %join, "sensitive-word list reload failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_list_and_volume_links_trigger_a_reload() {
        let name = OsString::from("wordlist.txt");
        assert!(concerns_list(Path::new("/etc/im/wordlist.txt"), &name));
        assert!(concerns_list(Path::new("/etc/im/..data"), &name));
        assert!(concerns_list(Path::new("/etc/im/..2026_12_05_18_00_00.123"), &name));
        assert!(!concerns_list(Path::new("/etc/im/config.yaml"), &name));
        assert!(!concerns_list(Path::new("/etc/im/wordlist.txt.swp"), &name));
    }
}
