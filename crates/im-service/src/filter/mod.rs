//! The sensitive-word filter on the send path (`FILTER_ENABLED`,
//! `FILTER_ACTION`, `FILTER_WORDLIST_PATH`): every send, private or group,
//! passes [`ContentFilter::check`] after validation and before it is queued
//! for its seq, so a blocked message uses no seq, is not stored and is not
//! remembered by the dedup cache.
//!
//! - matching is [`im_filter`]'s (normalised text, whole words in spaced
//!   scripts, anywhere in CJK/Thai);
//! - which bodies: `content_type` empty or `text/*` (any case); others pass
//!   untouched, as the filter cannot read them. A text body must be UTF-8
//!   while the filter is on (refused with `INVALID_ARGUMENT` otherwise: a
//!   body the filter cannot read would pass it);
//! - the list is swapped whole on reload ([`reload`]): a send sees the old
//!   list or the new one, never a mix;
//! - audit records are stored with their message (`MessageStore::
//!   append_audited`) and, on Kafka, published on `content_audit`
//!   ([`audit`]).

pub mod audit;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use im_config::{FilterAction, FilterConfig};
use im_core::ImError;
use im_filter::{Filter, WordList, WordListError};

use crate::metrics::Metrics;

/// What the filter made of a send's body.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Not text, or nothing matched: the body goes as sent.
    Unchanged,
    /// `replace`: the body with every matched character masked by `*`.
    Masked(Bytes),
    /// `audit`: the body goes as sent; these entries matched (each once,
    /// in order of first match).
    Audited(Vec<String>),
}

/// The filter a node applies, with the list it currently holds.
pub struct ContentFilter {
    action: FilterAction,
    path: PathBuf,
    current: RwLock<Arc<Filter>>,
    metrics: Arc<Metrics>,
}

impl ContentFilter {
    /// Loads the list of an enabled filter: none when the filter is off.
    /// Building the automaton of a long list takes a while; call it off the
    /// async threads (`spawn_blocking`) once serving.
    pub fn load(config: &FilterConfig, metrics: Arc<Metrics>) -> Result<Option<Self>, WordListError> {
        let (true, Some(path)) = (config.enabled, config.wordlist_path.as_ref()) else {
            return Ok(None);
        };
        let filter = build(path)?;
        metrics.filter_wordlist_entries.set(filter.len() as i64);
        Ok(Some(Self { action: config.action, path: path.clone(), current: RwLock::new(Arc::new(filter)), metrics }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn action(&self) -> FilterAction {
        self.action
    }

    /// The list a send checks against now.
    fn current(&self) -> Arc<Filter> {
        self.current.read().expect("filter lock poisoned").clone()
    }

    /// Applies the filter to one send's body.
    pub fn check(&self, content_type: &str, body: &[u8]) -> Result<Checked, ImError> {
        if !is_text(content_type) {
            return Ok(Checked::Unchanged);
        }
        let text = std::str::from_utf8(body).map_err(|_| {
            ImError::invalid(
                "a text body (content_type empty or text/*) must be UTF-8 while the sensitive-word filter is on",
            )
        })?;
        let started = Instant::now();
        let filter = self.current();
        let checked = match self.action {
            FilterAction::Block if filter.is_match(text) => Err(ImError::content_blocked()),
            FilterAction::Block => Ok(Checked::Unchanged),
            FilterAction::Replace => {
                let matches = filter.find(text);
                Ok(if matches.is_empty() {
                    Checked::Unchanged
                } else {
                    Checked::Masked(Bytes::from(im_filter::mask(text, &matches)))
                })
            }
            FilterAction::Audit => {
                let matches = filter.find(text);
                let mut entries: Vec<String> = Vec::new();
                for found in &matches {
                    let entry = filter.entry(found);
                    if !entries.iter().any(|known| known == entry) {
                        entries.push(entry.to_owned());
                    }
                }
                Ok(if entries.is_empty() { Checked::Unchanged } else { Checked::Audited(entries) })
            }
        };
        self.metrics.filter_seconds.observe(started.elapsed().as_secs_f64());
        if !matches!(checked, Ok(Checked::Unchanged)) {
            self.metrics.filter_match(self.action);
        }
        checked
    }

    /// Reads the list again and swaps it in whole. On failure the previous
    /// list stays, and the failure is counted; the caller logs it.
    /// Blocking (reads the file and builds the automaton).
    pub fn reload(&self) -> Result<usize, WordListError> {
        match build(&self.path) {
            Ok(filter) => {
                let entries = filter.len();
                *self.current.write().expect("filter lock poisoned") = Arc::new(filter);
                self.metrics.filter_wordlist_entries.set(entries as i64);
                Ok(entries)
            }
            Err(e) => {
                self.metrics.filter_reload_failures.inc();
                Err(e)
            }
        }
    }
}

fn build(path: &Path) -> Result<Filter, WordListError> {
    Ok(Filter::new(&WordList::load(path)?))
}

/// Whether the filter reads a body of this content type: untyped, or text.
fn is_text(content_type: &str) -> bool {
    content_type.is_empty() || content_type.get(..5).is_some_and(|prefix| prefix.eq_ignore_ascii_case("text/"))
}

/// Checks at start-up, before any port is bound, that an enabled filter's
/// list loads (exit 2 otherwise, as for other bad configuration).
pub fn check_config(config: &FilterConfig) -> Result<(), String> {
    match (config.enabled, &config.wordlist_path) {
        (true, Some(path)) => {
            WordList::load(path).map(drop).map_err(|e| format!("filter.wordlist_path (FILTER_WORDLIST_PATH): {e}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn filter_with(action: FilterAction, list: &str) -> (ContentFilter, tempfile::NamedTempFile) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(list.as_bytes()).unwrap();
        let config = FilterConfig { enabled: true, action, wordlist_path: Some(file.path().to_owned()) };
        let filter = ContentFilter::load(&config, Arc::new(Metrics::new())).unwrap().expect("enabled");
        (filter, file)
    }

    #[test]
    fn only_untyped_and_text_bodies_are_read() {
        assert!(is_text(""));
        assert!(is_text("text/plain"));
        assert!(is_text("TEXT/Markdown; charset=utf-8"));
        assert!(!is_text("image/png"));
        assert!(!is_text("text"));
        assert!(!is_text("application/json"));
    }

    #[test]
    fn each_action_does_what_it_says() {
        let (block, _file) = filter_with(FilterAction::Block, "bad\n");
        let refused = block.check("text/plain", b"a bad day").unwrap_err();
        assert_eq!(refused, ImError::content_blocked());
        assert!(!refused.message.contains("bad"), "the error must not echo the list: {refused}");
        assert_eq!(block.check("", b"a good day").unwrap(), Checked::Unchanged);
        assert_eq!(block.check("image/png", b"a bad day").unwrap(), Checked::Unchanged);

        let (replace, _file) = filter_with(FilterAction::Replace, "bad\n");
        assert_eq!(replace.check("text/plain", b"a BAD day").unwrap(), Checked::Masked(Bytes::from("a *** day")));
        assert_eq!(replace.check("text/plain", b"a good day").unwrap(), Checked::Unchanged);

        let (audit, _file) = filter_with(FilterAction::Audit, "bad\nugly\n");
        assert_eq!(
            audit.check("text/plain", b"bad, ugly and bad").unwrap(),
            Checked::Audited(vec!["bad".to_owned(), "ugly".to_owned()])
        );
        let matched = audit.metrics.render();
        assert!(matched.contains("im_filter_matches_total{action=\"audit\"} 1"), "{matched}");
    }

    #[test]
    fn a_text_body_that_is_not_utf8_is_refused_while_the_filter_is_on() {
        let (filter, _file) = filter_with(FilterAction::Block, "bad\n");
        let refused = filter.check("text/plain", b"\xffbad").unwrap_err();
        assert_eq!(refused.code, im_core::ErrorCode::InvalidArgument);
        assert_eq!(filter.check("application/octet-stream", b"\xffbad").unwrap(), Checked::Unchanged);
    }

    #[test]
    fn a_failed_reload_keeps_the_previous_list() {
        let (filter, mut file) = filter_with(FilterAction::Block, "bad\n");
        file.as_file_mut().set_len(0).unwrap();
        file.write_all(b"worse\n\xff\n").unwrap();
        let error = filter.reload().unwrap_err();
        assert_eq!(error.line(), Some(2), "{error}");
        assert!(filter.check("", b"bad").is_err(), "the old list still applies");
        assert!(filter.metrics.render().contains("im_filter_reload_failures_total 1"));

        std::fs::write(file.path(), "worse\n").unwrap();
        assert_eq!(filter.reload().unwrap(), 1);
        assert!(filter.check("", b"bad").is_ok());
        assert!(filter.check("", b"worse").is_err());
    }

    #[test]
    fn a_missing_list_is_a_configuration_error_naming_the_key() {
        let config = FilterConfig {
            enabled: true,
            action: FilterAction::Block,
            wordlist_path: Some("/nonexistent/w.txt".into()),
        };
        let error = check_config(&config).unwrap_err();
        assert!(error.starts_with("filter.wordlist_path (FILTER_WORDLIST_PATH): "), "{error}");
        assert!(error.contains("/nonexistent/w.txt"), "{error}");
        assert_eq!(check_config(&FilterConfig::default()), Ok(()));
    }
}
