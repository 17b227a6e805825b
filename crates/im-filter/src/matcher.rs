//! The automaton and the match rules.
//!
//! One Aho-Corasick automaton holds every entry's normalised form. It is built with
//! [`MatchKind::Standard`] and searched for *overlapping* matches, because the whole-word rule is
//! applied after the automaton: with leftmost-longest semantics the automaton would report one
//! match per position and drop the others, and when the whole-word rule then rejected that one a
//! shorter or overlapping entry that does qualify would be lost (entries `ass` and `ass hat`,
//! body "ass hats": the longer one fails the rule, the shorter one must still match). Overlapping
//! search reports every occurrence of every entry, so nothing is lost; the cost over a plain search
//! is only the matches themselves, and clean bodies — nearly all of them — have none.
//!
//! The automaton is ASCII-case-insensitive, which makes a body that is all ASCII (most of them) its
//! own normalised form up to case: it is searched in place, with no copy and no offset table. Other
//! bodies are normalised into a per-thread buffer that is reused from one call to the next.
//!
//! The automaton's kind is left to the crate: for a list of this size it picks a contiguous NFA
//! (1.5 MB for 10,000 entries). A DFA searched all-ASCII bodies about twice as fast (240 against
//! 430 ns for 100 bytes) but took 28 MB and three times as long to build for the same list, and it
//! grows with the list; at these figures the NFA is the better trade.
//!
//! A match is kept when its entry is written in a script without spaces (matches anywhere), or
//! when the normalised characters on both sides are not word characters (whole word). A whole-word
//! match must also start and end on the boundary of an original character: `(a)` as the single
//! character `⒜` does not contain the word `a`. An anywhere match may cover part of the expansion
//! of one character (`株` in `㈱`, which is `(株)`); its range then grows to the whole character,
//! so the character is masked.

use std::cell::RefCell;
use std::ops::{ControlFlow, Range};

use aho_corasick::{AhoCorasick, MatchKind};

use crate::normalise::{Normalised, is_unspaced, is_word_char};
use crate::wordlist::WordList;

/// A compiled word list. `Send + Sync`, built once per list (off the send path), cheap to share in
/// an `Arc`.
pub struct Filter {
    /// `None` for an empty list: the automaton crate needs at least nothing, but skipping the
    /// search entirely is the point of an empty filter.
    automaton: Option<AhoCorasick>,
    /// Indexed by pattern id (= entry index): the entry as written in the list.
    spellings: Vec<Box<str>>,
    /// Indexed by pattern id: whether the entry matches anywhere (unspaced script) rather than as a
    /// whole word.
    anywhere: Vec<bool>,
}

/// One match: a byte range of the original body, on character boundaries, and the entry it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub range: Range<usize>,
    /// The entry's index in its [`Filter`]; [`Filter::entry`] gives its text.
    pub entry: u32,
}

thread_local! {
    /// Normalised copies of non-ASCII bodies, reused by each thread so a send allocates nothing
    /// once the buffer has grown to the usual body size.
    static SCRATCH: RefCell<Normalised> = RefCell::new(Normalised::default());
}

/// A buffer grown past this by an unusually large body is given back rather than kept per thread.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

impl Filter {
    /// Compiles `list`. This is the expensive part (about 30 ms for 10,000 entries, parsing
    /// included; seconds for a million): do it once per list, off the send path.
    pub fn new(list: &WordList) -> Filter {
        if list.is_empty() {
            return Filter::empty();
        }
        // So that the first non-ASCII body after a (re)load does not pay for building the table.
        crate::normalise::warm_up();
        let patterns = list.entries.iter().map(|entry| entry.normalised.as_bytes());
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(patterns)
            // The automaton fails to build only past 2^31 states or patterns; WordList's limits
            // (64 MiB, 1 M entries) keep a list far below both.
            .expect("a word list within WordList's limits always compiles");
        Filter {
            automaton: Some(automaton),
            spellings: list.entries.iter().map(|entry| entry.spelling.clone()).collect(),
            anywhere: list.entries.iter().map(|entry| entry.normalised.chars().any(is_unspaced)).collect(),
        }
    }

    /// A filter that matches nothing.
    pub fn empty() -> Filter {
        Filter { automaton: None, spellings: Vec::new(), anywhere: Vec::new() }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.spellings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spellings.is_empty()
    }

    /// Every match in `body`, in order of start, each a byte range of the ORIGINAL body on char
    /// boundaries covering exactly the original characters that produced the matched normalised
    /// text.
    ///
    /// Matches may overlap (two entries, or one entry twice); the same entry over the same range is
    /// reported once. Invisible characters and dropped marks *inside* a match are inside its range;
    /// those before or after it are not.
    pub fn find(&self, body: &str) -> Vec<Match> {
        let mut matches = Vec::new();
        self.for_each_match(body, |found| {
            matches.push(found);
            ControlFlow::Continue(())
        });
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|m| (m.range.start, m.range.end, m.entry));
            matches.dedup();
        }
        matches
    }

    /// Same answer as `!find(body).is_empty()`, faster: stops at the first match and allocates
    /// nothing.
    pub fn is_match(&self, body: &str) -> bool {
        let mut found = false;
        self.for_each_match(body, |_| {
            found = true;
            ControlFlow::Break(())
        });
        found
    }

    /// The entry as written in the list (first spelling kept when duplicates collapsed).
    ///
    /// Panics if `m` did not come from this filter (its entry index is out of range).
    pub fn entry(&self, m: &Match) -> &str {
        &self.spellings[m.entry as usize]
    }

    /// Calls `f` with each qualifying match, in the automaton's order (by end), until it breaks.
    fn for_each_match(&self, body: &str, mut f: impl FnMut(Match) -> ControlFlow<()>) {
        let Some(automaton) = &self.automaton else { return };
        if body.is_ascii() {
            let bytes = body.as_bytes();
            for found in automaton.find_overlapping_iter(bytes) {
                let (start, end) = (found.start(), found.end());
                let entry = found.pattern().as_usize();
                if (self.anywhere[entry] || ascii_whole_word(bytes, start, end))
                    && f(Match { range: start..end, entry: entry as u32 }).is_break()
                {
                    return;
                }
            }
            return;
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut normalised) => {
                normalised.fill(body);
                self.for_each_normalised_match(automaton, body, &normalised, f);
                if normalised.text.capacity() > SCRATCH_KEEP_BYTES {
                    *normalised = Normalised::default();
                }
            }
            // Only reachable if `f` itself called back into a filter on this thread.
            Err(_) => {
                let mut normalised = Normalised::default();
                normalised.fill(body);
                self.for_each_normalised_match(automaton, body, &normalised, f);
            }
        });
    }

    fn for_each_normalised_match(
        &self,
        automaton: &AhoCorasick,
        body: &str,
        normalised: &Normalised,
        mut f: impl FnMut(Match) -> ControlFlow<()>,
    ) {
        let (text, origin) = (normalised.text.as_str(), normalised.origin.as_slice());
        for found in automaton.find_overlapping_iter(text) {
            let (start, end) = (found.start(), found.end());
            let entry = found.pattern().as_usize();
            let qualifies = self.anywhere[entry]
                || (starts_a_character(origin, start)
                    && ends_a_character(origin, end)
                    && text[..start].chars().next_back().is_none_or(|c| !is_word_char(c))
                    && text[end..].chars().next().is_none_or(|c| !is_word_char(c)));
            if qualifies && f(Match { range: original_range(body, origin, start..end), entry: entry as u32 }).is_break()
            {
                return;
            }
        }
    }
}

/// Whether the ASCII match `start..end` has no word character just before or just after it.
fn ascii_whole_word(bytes: &[u8], start: usize, end: usize) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    (start == 0 || !is_word(bytes[start - 1])) && bytes.get(end).is_none_or(|&b| !is_word(b))
}

/// Whether normalised byte `at` is the first one produced by its original character.
fn starts_a_character(origin: &[usize], at: usize) -> bool {
    at == 0 || origin[at - 1] != origin[at]
}

/// Whether normalised byte `at - 1` is the last one produced by its original character.
fn ends_a_character(origin: &[usize], at: usize) -> bool {
    at == origin.len() || origin[at] != origin[at - 1]
}

/// The original characters that produced normalised bytes `matched`: from the first one's start
/// to the last one's end. (Min and max rather than the two ends, because canonical reordering of
/// kept marks can put a later character's mark before an earlier one's.)
fn original_range(body: &str, origin: &[usize], matched: Range<usize>) -> Range<usize> {
    let origins = &origin[matched];
    let start = origins.iter().copied().min().expect("a match is never empty");
    let last = origins.iter().copied().max().expect("a match is never empty");
    let last_len = body[last..].chars().next().map_or(0, char::len_utf8);
    start..last + last_len
}

/// Shows the size only: the entries are confidential.
impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("entries", &self.len())
            .field("automaton", &self.automaton.as_ref().map(|a| (a.kind(), a.memory_usage())))
            .finish()
    }
}

/// Returns `body` with every character inside any match replaced by '*' (one '*' per char, so the
/// length in chars is unchanged).
///
/// A character is inside a match when its first byte is in the match's range; ranges from
/// [`Filter::find`] are on character boundaries, so that is every character they cover. Ranges may
/// overlap and come in any order.
pub fn mask(body: &str, matches: &[Match]) -> String {
    if matches.is_empty() {
        return body.to_owned();
    }
    let mut ranges: Vec<Range<usize>> = matches.iter().map(|m| m.range.clone()).collect();
    ranges.sort_unstable_by_key(|range| range.start);
    let mut masked = String::with_capacity(body.len());
    let mut copied_to = 0;
    let mut ranges = ranges.into_iter().peekable();
    while let Some(range) = ranges.next() {
        let mut end = range.end;
        while let Some(next) = ranges.next_if(|next| next.start <= end) {
            end = end.max(next.end);
        }
        let start = next_char_boundary(body, range.start.max(copied_to));
        let end = next_char_boundary(body, end);
        if start >= end {
            continue;
        }
        masked.push_str(&body[copied_to..start]);
        masked.extend(std::iter::repeat_n('*', body[start..end].chars().count()));
        copied_to = end;
    }
    masked.push_str(&body[copied_to..]);
    masked
}

/// The first character boundary at or after `at` (or the end of `s`).
fn next_char_boundary(s: &str, at: usize) -> usize {
    (at..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(entries: &str) -> Filter {
        Filter::new(&WordList::parse(entries.as_bytes()).unwrap())
    }

    /// The masked body, with `find` and `is_match` checked against each other.
    fn masked(filter: &Filter, body: &str) -> String {
        let matches = filter.find(body);
        assert_eq!(filter.is_match(body), !matches.is_empty(), "{body:?}");
        mask(body, &matches)
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Filter>();
        assert_send_sync::<WordList>();
    }

    #[test]
    fn empty_filter_matches_nothing() {
        for filter in [Filter::empty(), filter(""), filter("# only a comment\n")] {
            assert_eq!(filter.len(), 0);
            assert!(filter.is_empty());
            assert_eq!(filter.find("anything at all, ｂａｄ, 中文"), []);
            assert!(!filter.is_match("anything"));
        }
    }

    #[test]
    fn plain_match_reports_the_range_and_entry() {
        let filter = filter("bad\nworse");
        assert_eq!(filter.len(), 2);
        let matches = filter.find("a bad day, a worse one");
        assert_eq!(matches, [Match { range: 2..5, entry: 0 }, Match { range: 13..18, entry: 1 }]);
        assert_eq!(filter.entry(&matches[1]), "worse");
    }

    #[test]
    fn full_width() {
        let filter = filter("bad");
        let body = "so ｂａｄ!";
        let matches = filter.find(body);
        assert_eq!(matches.len(), 1);
        assert_eq!(&body[matches[0].range.clone()], "ｂａｄ");
        assert_eq!(masked(&filter, body), "so ***!");
    }

    #[test]
    fn upper_case() {
        let filter = filter("bad");
        assert_eq!(masked(&filter, "BAD and Bad and bAd"), "*** and *** and ***");
        // An upper-case entry matches lower-case text too.
        assert_eq!(masked(&self::filter("BAD"), "bad"), "***");
    }

    #[test]
    fn sharp_s_and_dotted_capital_i() {
        let filter = filter("strasse\nistanbul");
        assert_eq!(masked(&filter, "die Straße"), "die ******");
        assert_eq!(masked(&filter, "STRASSE"), "*******");
        assert_eq!(masked(&filter, "İSTANBUL"), "********");
        let filter = self::filter("straße");
        assert_eq!(masked(&filter, "STRASSE"), "*******");
    }

    #[test]
    fn greek_final_sigma() {
        let filter = filter("σας");
        assert_eq!(masked(&filter, "ΣΑΣ!"), "***!");
    }

    #[test]
    fn ligature() {
        let filter = filter("fine");
        let body = "ﬁne";
        assert_eq!(filter.find(body), [Match { range: 0..body.len(), entry: 0 }]);
        assert_eq!(masked(&filter, body), "***");
        // A word is not a fragment of one character: `ﬁ` does not contain the word `f`.
        assert_eq!(self::filter("f").find("ﬁ"), []);
        assert_eq!(self::filter("a").find("⒜"), []);
    }

    #[test]
    fn invisible_characters_inside_a_word() {
        let filter = filter("bad");
        for body in ["b\u{200D}ad", "b\u{200B}a\u{200C}d", "b\u{00AD}ad", "b\u{2060}ad", "b\u{FEFF}ad", "ba\u{FE0F}d"] {
            assert_eq!(filter.find(body), [Match { range: 0..body.len(), entry: 0 }], "{body:?}");
            assert_eq!(masked(&filter, body).chars().filter(|&c| c == '*').count(), body.chars().count());
        }
        // Invisible characters around a match are not part of it.
        assert_eq!(filter.find("\u{200B}bad\u{200B}"), [Match { range: 3..6, entry: 0 }]);
        // ... and inside a longer word they do not split it.
        assert_eq!(self::filter("ass").find("cl\u{200B}ass"), []);
    }

    #[test]
    fn combining_marks() {
        let filter = filter("bad");
        let body = "b\u{0308}a\u{0328}d";
        assert_eq!(filter.find(body), [Match { range: 0..body.len(), entry: 0 }]);
        assert_eq!(masked(&filter, body), "*****");
        assert_eq!(masked(&filter, "bäd"), "***");
        // Zalgo.
        assert_eq!(filter.find("b\u{0301}\u{0302}\u{0303}a\u{0304}\u{0305}d\u{0306}").len(), 1);
        // An accented entry matches the plain word.
        assert_eq!(masked(&self::filter("café"), "CAFE"), "****");
    }

    #[test]
    fn whole_words_only_for_spaced_scripts() {
        let filter = filter("ass");
        assert_eq!(filter.find("class"), []);
        assert_eq!(filter.find("assume"), []);
        assert_eq!(filter.find("mass_ass"), []);
        assert_eq!(filter.find("ass9"), []);
        assert_eq!(masked(&filter, "ass"), "***");
        assert_eq!(masked(&filter, "ass."), "***.");
        assert_eq!(masked(&filter, "an ass here"), "an *** here");
        assert_eq!(masked(&filter, "(ASS)"), "(***)");
        // Word characters beyond ASCII count too.
        assert_eq!(filter.find("éass"), []);
        assert_eq!(filter.find("assé"), []);
        assert_eq!(masked(&filter, "«ass»"), "«***»");
        let filter = self::filter("дурак");
        assert_eq!(filter.find("придурака"), []);
        assert_eq!(masked(&filter, "ты дурак!"), "ты *****!");
    }

    #[test]
    fn a_rejected_longer_match_does_not_hide_a_shorter_one() {
        let filter = filter("ass hat\nass\nhat");
        assert_eq!(masked(&filter, "ass hats"), "*** hats");
        let matches = filter.find("ass hat");
        assert_eq!(matches.len(), 3);
        assert_eq!(matches[0].range, 0..3);
        assert_eq!(matches[1].range, 0..7);
        assert_eq!(matches[2].range, 4..7);
    }

    #[test]
    fn cjk_entry_inside_a_cjk_sentence() {
        let filter = filter("坏蛋");
        let body = "你这个坏蛋真讨厌";
        let matches = filter.find(body);
        assert_eq!(matches, [Match { range: 9..15, entry: 0 }]);
        assert_eq!(masked(&filter, body), "你这个**真讨厌");
        // Japanese too, and next to Latin letters.
        let filter = self::filter("バカ");
        assert_eq!(masked(&filter, "おまえはバカだ"), "おまえは**だ");
        assert_eq!(masked(&filter, "abcﾊﾞｶxyz"), "abc***xyz");
        assert_eq!(filter.find("ハカ"), []);
    }

    #[test]
    fn thai_entry_inside_a_thai_sentence() {
        let filter = filter("ควาย");
        let body = "แกมันควายจริงๆ";
        let matches = filter.find(body);
        assert_eq!(matches.len(), 1);
        assert_eq!(&body[matches[0].range.clone()], "ควาย");
        assert_eq!(masked(&filter, body), "แกมัน****จริงๆ");
        // Marks are part of Thai spelling: กิน (eat) is not กน.
        assert_eq!(self::filter("กน").find("กิน"), []);
        assert_eq!(self::filter("กิน").find("เรากินข้าว").len(), 1);
    }

    #[test]
    fn a_cjk_entry_inside_one_compatibility_character() {
        let filter = filter("株");
        let body = "a㈱b";
        assert_eq!(filter.find(body), [Match { range: 1..4, entry: 0 }]);
        assert_eq!(masked(&filter, body), "a*b");
    }

    #[test]
    fn overlapping_matches_are_all_reported_and_masked_as_a_union() {
        let filter = filter("坏蛋\n蛋糕");
        let body = "坏蛋糕";
        assert_eq!(filter.find(body), [Match { range: 0..6, entry: 0 }, Match { range: 3..9, entry: 1 }]);
        assert_eq!(masked(&filter, body), "***");
    }

    #[test]
    fn mask_replaces_exact_characters() {
        let filter = filter("bad");
        // Multi-byte characters become one '*' each; a 3-character full-width word, 3 '*'.
        let body = "é ｂａｄ ü";
        let out = masked(&filter, body);
        assert_eq!(out, "é *** ü");
        assert_eq!(out.chars().count(), body.chars().count());
        // Unmatched bodies come back unchanged.
        assert_eq!(mask("nothing here", &[]), "nothing here");
    }

    #[test]
    fn mask_takes_ranges_in_any_order_and_overlapping() {
        let body = "abcdefgh";
        let matches = [
            Match { range: 5..7, entry: 0 },
            Match { range: 0..2, entry: 0 },
            Match { range: 1..3, entry: 1 },
            Match { range: 6..8, entry: 0 },
        ];
        assert_eq!(mask(body, &matches), "***de***");
        // A range that ends inside a character masks that character; one past the end is clamped.
        assert_eq!(mask("añb", &[Match { range: 1..2, entry: 0 }]), "a*b");
        assert_eq!(mask("ab", &[Match { range: 1..10, entry: 0 }]), "a*");
    }

    #[test]
    fn entry_gives_the_first_spelling() {
        let filter = filter("BaD\nbad\nＢＡＤ");
        assert_eq!(filter.len(), 1);
        let matches = filter.find("bad");
        assert_eq!(filter.entry(&matches[0]), "BaD");
    }

    #[test]
    fn debug_does_not_show_entries() {
        let shown = format!("{:?}", filter("secretword"));
        assert!(!shown.contains("secretword"), "{shown}");
    }

    #[test]
    fn long_non_ascii_bodies_do_not_keep_their_buffer() {
        let filter = filter("bad");
        let body = format!("{} bad", "é".repeat(100_000));
        assert_eq!(filter.find(&body).len(), 1);
        SCRATCH.with(|scratch| assert!(scratch.borrow().text.capacity() <= SCRATCH_KEEP_BYTES));
        assert_eq!(filter.find("é bad").len(), 1);
    }
}
