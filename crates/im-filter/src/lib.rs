//! The sensitive-word matching engine (issue 12): which words of a list a message body contains,
//! where they are in the original text, and the body with them masked.
//!
//! Layout:
//!
//! - [`wordlist`]: the list file — parsing, the size limits, and errors that name the file and line
//!   but never an entry (the list is confidential).
//! - `normalise`: the matching form of a text (NFKD compatibility folding, full case folding,
//!   invisible characters and accent marks dropped) with, for each byte, where it came from. Its
//!   module docs say what is folded and why, and what is not.
//! - [`matcher`]: [`Filter`], one Aho-Corasick automaton over the normalised entries, the
//!   whole-word rule for spaced scripts, and [`mask`].
//!
//! Why a normalised view rather than normalised entries alone: people who want past a filter write
//! `ｂａｄ`, `BAD`, `b\u{200D}ad` or `b̈ad`, and every one of those must look like `bad` to the
//! automaton. Matches are found in the normalised text and mapped back to byte ranges of the body
//! the user wrote, so `replace` masks exactly the characters that spelled the word.
//!
//! Whole words: an entry written in a script that puts spaces between words (Latin, Cyrillic,
//! Greek, Arabic, Hangul…) matches only as a whole word, so `ass` does not fire inside `class`. An
//! entry containing a character of a script written without spaces (Han, kana, Thai, Lao, Khmer,
//! Myanmar, Tibetan…) matches anywhere, since there is no word boundary to look for.
//!
//! Cost: building a [`Filter`] is the expensive part and belongs off the send path (build the new
//! one, then swap an `Arc`). Matching an all-ASCII body searches it in place; other bodies are
//! normalised into a reused per-thread buffer. `BENCHMARKS.md` has the figures.
//!
//! This crate does no I/O except [`WordList::load`], has no global state but that per-thread
//! buffer, and knows nothing of actions (block, replace, audit), metrics or reloading: those belong
//! to the service that owns the list.

pub mod matcher;
mod normalise;
pub mod wordlist;

pub use matcher::{Filter, Match, mask};
pub use wordlist::{WordList, WordListError, WordListErrorKind};

#[cfg(test)]
mod properties;
