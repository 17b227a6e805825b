//! The word list file: parsing, limits, and errors a person can act on.
//!
//! The list is confidential (it is a list of what people may not say, and of what the operator
//! looks for), so no error message, log line or `Debug` output of this crate contains an entry:
//! errors name the file and the line instead.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::normalise::normalise;

/// A parsed word list: distinct entries (after normalisation), in the order of the file.
#[derive(Clone, Default)]
pub struct WordList {
    pub(crate) entries: Vec<Entry>,
}

/// One entry: as written in the file (trimmed), and its normalised form (trimmed, never empty).
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) spelling: Box<str>,
    pub(crate) normalised: Box<str>,
}

/// The limits [`WordList::parse`] and [`WordList::load`] enforce; tests use smaller ones.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_entries: usize,
    pub(crate) max_bytes: u64,
}

impl Limits {
    pub(crate) const DEFAULT: Limits = Limits { max_entries: WordList::MAX_ENTRIES, max_bytes: WordList::MAX_BYTES };
}

impl WordList {
    /// The most distinct entries a list may have.
    pub const MAX_ENTRIES: usize = 1_000_000;
    /// The largest word list file, in bytes (64 MiB).
    pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

    /// One entry per line, UTF-8, `#` starts a comment line (a line whose first non-blank char is
    /// '#'), blank lines ignored, leading/trailing whitespace trimmed, duplicates (after
    /// normalisation) collapsed. An entry that normalises to nothing (only invisible chars) is an
    /// error with its line.
    ///
    /// A UTF-8 byte order mark at the start is skipped, and lines may end in CRLF. There is no
    /// escape: an entry cannot start with `#`.
    pub fn parse(bytes: &[u8]) -> Result<WordList, WordListError> {
        Self::parse_with_limits(bytes, Limits::DEFAULT)
    }

    /// Reads the file (refusing > MAX_BYTES from metadata before reading) and parses it; errors
    /// carry the path.
    pub fn load(path: &Path) -> Result<WordList, WordListError> {
        Self::load_with_limits(path, Limits::DEFAULT)
    }

    /// The number of distinct entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn parse_with_limits(bytes: &[u8], limits: Limits) -> Result<WordList, WordListError> {
        let size = bytes.len() as u64;
        if size > limits.max_bytes {
            return Err(WordListErrorKind::TooLarge { size, limit: limits.max_bytes }.into());
        }
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes).map_err(|error| {
            let line = 1 + bytes[..error.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            WordListError::from(WordListErrorKind::InvalidUtf8).at_line(line)
        })?;

        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        for (index, line) in text.split('\n').enumerate() {
            let spelling = line.trim();
            if spelling.is_empty() || spelling.starts_with('#') {
                continue;
            }
            // Trimmed again: an invisible character can hide a space from the first trim.
            let normalised = normalise(spelling);
            let normalised = normalised.trim();
            if normalised.is_empty() {
                return Err(WordListError::from(WordListErrorKind::NothingVisible).at_line(index + 1));
            }
            if !seen.insert(normalised.to_owned()) {
                continue;
            }
            entries.push(Entry { spelling: spelling.into(), normalised: normalised.into() });
        }
        // Counted after collapsing duplicates: the limit bounds the automaton, which holds each
        // distinct entry once. The byte limit above bounds the work done to get here.
        if entries.len() > limits.max_entries {
            return Err(WordListErrorKind::TooManyEntries { entries: entries.len(), limit: limits.max_entries }.into());
        }
        Ok(WordList { entries })
    }

    pub(crate) fn load_with_limits(path: &Path, limits: Limits) -> Result<WordList, WordListError> {
        let in_file = |kind: WordListErrorKind| WordListError { path: Some(path.to_owned()), line: None, kind };
        let file = std::fs::File::open(path).map_err(|error| in_file(WordListErrorKind::Read(error)))?;
        let size = file.metadata().map_err(|error| in_file(WordListErrorKind::Read(error)))?.len();
        if size > limits.max_bytes {
            return Err(in_file(WordListErrorKind::TooLarge { size, limit: limits.max_bytes }));
        }
        // The file may grow between the metadata and the read (or not be a regular file at all):
        // read one byte past the limit at most, and let parse refuse it.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(limits.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|error| in_file(WordListErrorKind::Read(error)))?;
        Self::parse_with_limits(&bytes, limits).map_err(|error| WordListError { path: Some(path.to_owned()), ..error })
    }
}

/// Shows the size only: the entries are confidential.
impl fmt::Debug for WordList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WordList").field("entries", &self.entries.len()).finish_non_exhaustive()
    }
}

/// Display is one line a person can act on, naming the path (when loaded from a file) and the
/// 1-based line number where there is one, e.g. "/etc/im-service/wordlist.txt line 12: not valid
/// UTF-8", "/etc/x.txt: 1000001 entries, the limit is 1000000", "/etc/x.txt: cannot read: No such
/// file or directory (os error 2)". Never includes the entries' text (the list is confidential).
#[derive(Debug, thiserror::Error)]
#[error("{}{}", Location::of(.path, .line), .kind)]
pub struct WordListError {
    path: Option<PathBuf>,
    line: Option<usize>,
    kind: WordListErrorKind,
}

/// What is wrong with a word list (the part of [`WordListError`] after the location).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WordListErrorKind {
    /// The file could not be opened or read. The I/O error is part of the message rather than a
    /// `source`, so that a report of the error chain does not print it twice.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("{size} bytes, the limit is {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("{entries} entries, the limit is {limit}")]
    TooManyEntries { entries: usize, limit: usize },
    #[error("not valid UTF-8")]
    InvalidUtf8,
    #[error("the entry has only invisible characters or lone combining marks, so it would match nothing")]
    NothingVisible,
}

impl WordListError {
    /// The 1-based line of the file the error is about, if it is about one line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The file, when the list was loaded from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What is wrong, for a caller that reacts differently to, say, a missing file.
    pub fn kind(&self) -> &WordListErrorKind {
        &self.kind
    }

    fn at_line(self, line: usize) -> WordListError {
        WordListError { line: Some(line), ..self }
    }
}

impl From<WordListErrorKind> for WordListError {
    fn from(kind: WordListErrorKind) -> Self {
        WordListError { path: None, line: None, kind }
    }
}

/// "PATH line N: ", "PATH: ", "line N: " or nothing.
struct Location<'a> {
    path: Option<&'a Path>,
    line: Option<usize>,
}

impl<'a> Location<'a> {
    fn of(path: &'a Option<PathBuf>, line: &Option<usize>) -> Self {
        Location { path: path.as_deref(), line: *line }
    }
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{} line {line}: ", path.display()),
            (Some(path), None) => write!(f, "{}: ", path.display()),
            (None, Some(line)) => write!(f, "line {line}: "),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn spellings(list: &WordList) -> Vec<&str> {
        list.entries.iter().map(|entry| &*entry.spelling).collect()
    }

    #[test]
    fn comments_blanks_and_whitespace() {
        let list =
            WordList::parse(b"# a comment\n\n  badword  \n   # an indented comment\n\t\nother word\nlast").unwrap();
        assert_eq!(spellings(&list), ["badword", "other word", "last"]);
        assert_eq!(list.len(), 3);
        assert!(!list.is_empty());
    }

    #[test]
    fn crlf_line_endings() {
        let list = WordList::parse(b"one\r\ntwo\r\n\r\n# c\r\nthree\r\n").unwrap();
        assert_eq!(spellings(&list), ["one", "two", "three"]);
    }

    #[test]
    fn byte_order_mark_at_the_start_is_skipped() {
        let list = WordList::parse(b"\xEF\xBB\xBF# comment\nbad\n").unwrap();
        assert_eq!(spellings(&list), ["bad"]);
    }

    #[test]
    fn duplicates_collapse_after_normalisation_keeping_the_first_spelling() {
        let list = WordList::parse("Bad\nbad\nＢＡＤ\nb\u{200D}ad\nbäd\nother\nBAD".as_bytes()).unwrap();
        assert_eq!(spellings(&list), ["Bad", "other"]);
    }

    #[test]
    fn spaces_behind_invisible_characters_are_trimmed_too() {
        let list = WordList::parse("\u{200B} bad \u{FEFF}\nbad".as_bytes()).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(&*list.entries[0].normalised, "bad");
    }

    #[test]
    fn empty_input_is_an_empty_list() {
        assert!(WordList::parse(b"").unwrap().is_empty());
        assert!(WordList::parse(b"# only comments\n\n").unwrap().is_empty());
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_line() {
        let error = WordList::parse(b"one\n# two\nthr\xFFee\nfour\n").unwrap_err();
        assert!(matches!(error.kind(), WordListErrorKind::InvalidUtf8));
        assert_eq!(error.line(), Some(3));
        assert_eq!(error.to_string(), "line 3: not valid UTF-8");
        // Line numbers count from the start of the file, byte order mark or not.
        let error = WordList::parse(b"\xEF\xBB\xBFone\n\xC3").unwrap_err();
        assert_eq!(error.line(), Some(2));
    }

    #[test]
    fn an_entry_of_only_invisible_characters_is_an_error_with_its_line() {
        let error = WordList::parse("ok\n\u{200B}\u{200D}\u{FE0F}\n".as_bytes()).unwrap_err();
        assert_eq!(error.line(), Some(2));
        assert!(matches!(error.kind(), WordListErrorKind::NothingVisible));
        assert!(error.to_string().starts_with("line 2: "), "{error}");
    }

    #[test]
    fn the_entry_limit_counts_distinct_entries() {
        let limits = Limits { max_entries: 3, max_bytes: 1024 };
        assert_eq!(WordList::parse_with_limits(b"a\nb\nc\nA\nB", limits).unwrap().len(), 3);
        let error = WordList::parse_with_limits(b"a\nb\nc\nd\ne", limits).unwrap_err();
        assert!(matches!(error.kind(), WordListErrorKind::TooManyEntries { entries: 5, limit: 3 }));
        assert_eq!(error.to_string(), "5 entries, the limit is 3");
        assert_eq!(error.line(), None);
    }

    #[test]
    fn the_byte_limit() {
        let limits = Limits { max_entries: 100, max_bytes: 8 };
        assert!(WordList::parse_with_limits(b"1234567\n", limits).is_ok());
        let error = WordList::parse_with_limits(b"12345678\n", limits).unwrap_err();
        assert_eq!(error.to_string(), "9 bytes, the limit is 8");
    }

    #[test]
    fn the_real_limits() {
        assert_eq!(WordList::MAX_ENTRIES, 1_000_000);
        assert_eq!(WordList::MAX_BYTES, 67_108_864);
        let too_big = vec![b'\n'; WordList::MAX_BYTES as usize + 1];
        assert!(matches!(WordList::parse(&too_big).unwrap_err().kind(), WordListErrorKind::TooLarge { .. }));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wordlist.txt");
        std::fs::File::create(&path).unwrap().write_all(b"fine\nsecretword\n\xFF\n").unwrap();
        let error = WordList::load(&path).unwrap_err();
        assert_eq!(error.path(), Some(path.as_path()));
        assert_eq!(error.line(), Some(3));
        assert_eq!(error.to_string(), format!("{} line 3: not valid UTF-8", path.display()));

        std::fs::write(&path, "fine\nsecretword\n").unwrap();
        assert_eq!(WordList::load(&path).unwrap().len(), 2);
    }

    #[test]
    fn load_refuses_a_file_over_the_limit_from_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        std::fs::write(&path, "0123456789\n".repeat(10)).unwrap();
        let limits = Limits { max_entries: 1000, max_bytes: 100 };
        let error = WordList::load_with_limits(&path, limits).unwrap_err();
        assert_eq!(error.to_string(), format!("{}: 110 bytes, the limit is 100", path.display()));
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let limits = Limits { max_entries: 2, max_bytes: 1000 };
        let error = WordList::load_with_limits(&path, limits).unwrap_err();
        assert_eq!(error.to_string(), format!("{}: 3 entries, the limit is 2", path.display()));
    }

    #[test]
    fn load_reports_a_missing_file() {
        let error = WordList::load(Path::new("/nonexistent/im-filter/wordlist.txt")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/nonexistent/im-filter/wordlist.txt: cannot read: No such file or directory (os error 2)"
        );
        assert_eq!(error.line(), None);
        assert!(matches!(error.kind(), WordListErrorKind::Read(_)));
    }

    /// No message contains the text of an entry, whatever went wrong.
    #[test]
    fn display_never_contains_an_entry() {
        let secret = "verysecretword";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        let cases: Vec<(Vec<u8>, Limits)> = vec![
            (format!("{secret}\n{secret}2\x01\n\u{200B}\n").into_bytes(), Limits::DEFAULT),
            ([secret.as_bytes(), b"\n", secret.as_bytes(), b"\xFF\n"].concat(), Limits::DEFAULT),
            (format!("{secret}\n{secret}x\n").into_bytes(), Limits { max_entries: 1, max_bytes: 1000 }),
            (format!("{secret}\n").into_bytes(), Limits { max_entries: 10, max_bytes: 4 }),
        ];
        for (bytes, limits) in cases {
            let parsed = WordList::parse_with_limits(&bytes, limits).unwrap_err();
            std::fs::write(&path, &bytes).unwrap();
            let loaded = WordList::load_with_limits(&path, limits).unwrap_err();
            for error in [parsed, loaded] {
                let shown = format!("{error} {error:?}");
                assert!(!shown.contains(secret), "{shown}");
            }
        }
        let list = WordList::parse(secret.as_bytes()).unwrap();
        assert!(!format!("{list:?}").contains(secret));
    }
}
