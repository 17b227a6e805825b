//! Property test: for random bodies and random small lists, `find`, `is_match` and `mask` agree
//! with each other and with the normalisation.
//!
//! Bodies and entries are drawn from one small vocabulary so that matches are frequent, and the
//! body fragments include what the filter must see through: case, full width, combining marks,
//! invisible characters, ligatures, CJK and Thai without spaces, one-character expansions (`㈱`).

use proptest::prelude::*;

use crate::normalise::{Normalised, is_unspaced, is_word_char, normalise};
use crate::{Filter, Match, WordList, mask};

/// The matches by brute force: every occurrence of every entry's normalised form in the whole
/// body's normalised text, kept by the rules in the matcher's docs. No automaton, no ASCII path.
fn brute_force(list: &WordList, body: &str) -> Vec<Match> {
    let mut normalised = Normalised::default();
    normalised.fill(body);
    let (text, origin) = (&normalised.text, &normalised.origin);
    let mut matches = Vec::new();
    for (index, entry) in list.entries.iter().enumerate() {
        let entry = &*entry.normalised;
        for start in (0..text.len()).filter(|&at| text.is_char_boundary(at) && text[at..].starts_with(entry)) {
            let end = start + entry.len();
            let whole_word = (start == 0 || origin[start - 1] != origin[start])
                && (end == text.len() || origin[end] != origin[end - 1])
                && text[..start].chars().next_back().is_none_or(|c| !is_word_char(c))
                && text[end..].chars().next().is_none_or(|c| !is_word_char(c));
            if entry.chars().any(is_unspaced) || whole_word {
                let first = origin[start..end].iter().copied().min().unwrap();
                let last = origin[start..end].iter().copied().max().unwrap();
                let range = first..last + body[last..].chars().next().unwrap().len_utf8();
                matches.push(Match { range, entry: index as u32 });
            }
        }
    }
    matches.sort_by_key(|m| (m.range.start, m.range.end, m.entry));
    matches.dedup();
    matches
}

const WORDS: &[&str] = &["ass", "class", "bad", "a", "ab", "fine", "hat", "ass hat", "strasse", "i", "株"];
const UNSPACED: &[&str] = &["坏", "蛋", "糕", "你", "好", "坏蛋", "蛋糕", "ก", "กิน", "ข้าว", "バカ"];

/// A word written the way an evader might: as is, upper case, or full width.
fn spelled(word: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(word.to_owned()),
        Just(word.to_uppercase()),
        Just(
            word.chars()
                .map(|c| if c.is_ascii_graphic() { char::from_u32(c as u32 + 0xFEE0).unwrap() } else { c })
                .collect()
        ),
    ]
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_flat_map(spelled),
        2 => prop::sample::select(UNSPACED).prop_map(str::to_owned),
        3 => prop::sample::select(&[" ", " ", ".", "_", "\n", "*", "9"][..]).prop_map(str::to_owned),
        1 => prop::sample::select(&["\u{0301}", "\u{0308}", "\u{0328}", "\u{0E48}", "\u{3099}"][..]).prop_map(str::to_owned),
        1 => prop::sample::select(&["\u{200B}", "\u{200D}", "\u{00AD}", "\u{FEFF}", "\u{FE0F}"][..]).prop_map(str::to_owned),
        1 => prop::sample::select(&["ﬁ", "ß", "İ", "ｶﾞ", "㈱", "ΣΑΣ", "é"][..]).prop_map(str::to_owned),
    ]
}

/// ASCII only: the path that searches the body in place.
fn ascii_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(WORDS).prop_filter("ASCII", |word| word.is_ascii()).prop_map(str::to_owned),
        1 => prop::sample::select(WORDS).prop_filter("ASCII", |word| word.is_ascii()).prop_map(str::to_uppercase),
        2 => prop::sample::select(&[" ", ".", "_", "\n", "*", "9", "\t"][..]).prop_map(str::to_owned),
    ]
}

/// Half all-ASCII bodies, half mixed.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(ascii_fragment(), 0..16).prop_map(|fragments| fragments.concat()),
        prop::collection::vec(fragment(), 0..24).prop_map(|fragments| fragments.concat()),
    ]
}

fn list() -> impl Strategy<Value = Vec<String>> {
    let entry = prop_oneof![
        3 => prop::sample::select(WORDS).prop_flat_map(spelled),
        2 => prop::sample::select(UNSPACED).prop_map(str::to_owned),
        1 => (prop::sample::select(WORDS), prop::sample::select(&["\u{200D}", "\u{0301}"][..]))
            .prop_map(|(word, extra)| format!("{word}{extra}")),
    ];
    prop::collection::vec(entry, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn find_is_match_and_mask_agree(body in body(), entries in list()) {
        let list = WordList::parse(entries.join("\n").as_bytes()).unwrap();
        let filter = Filter::new(&list);
        let matches = filter.find(&body);
        let masked = mask(&body, &matches);

        // The automaton (and the ASCII path) find what brute force finds.
        prop_assert_eq!(&matches, &brute_force(&list, &body));

        // (a) The length in characters is unchanged.
        prop_assert_eq!(masked.chars().count(), body.chars().count());

        // (c) Every range is non-empty, inside the body, on character boundaries; in order of start.
        for m in &matches {
            prop_assert!(m.range.start < m.range.end && m.range.end <= body.len(), "{:?}", m);
            prop_assert!(body.is_char_boundary(m.range.start) && body.is_char_boundary(m.range.end), "{:?}", m);
            prop_assert!((m.entry as usize) < filter.len());
        }
        prop_assert!(matches.windows(2).all(|pair| pair[0].range.start <= pair[1].range.start));

        // (b) Characters inside a match are '*', all others are unchanged.
        for ((offset, original), shown) in body.char_indices().zip(masked.chars()) {
            let inside = matches.iter().any(|m| m.range.contains(&offset));
            if inside {
                prop_assert_eq!(shown, '*', "at {}", offset);
            } else {
                prop_assert_eq!(shown, original, "at {}", offset);
            }
        }

        // (d) is_match is find's answer.
        prop_assert_eq!(filter.is_match(&body), !matches.is_empty());

        // (e) Each range's normalised text is its entry's normalised form: exactly, for a
        // whole-word entry; containing it, for an anywhere entry, whose range may have grown to
        // the whole of one character that expands to several (`㈱`).
        for m in &matches {
            let entry = &*list.entries[m.entry as usize].normalised;
            let spelled = normalise(filter.entry(m));
            prop_assert_eq!(entry, spelled.trim());
            let found = normalise(&body[m.range.clone()]);
            if entry.chars().any(is_unspaced) {
                prop_assert!(found.contains(entry), "{:?} in {:?}", entry, found);
            } else {
                prop_assert_eq!(found.as_str(), entry);
            }
        }
    }

    /// Every entry is found in a body that is just that entry, spelled as in the list.
    #[test]
    fn every_entry_matches_itself(entries in list()) {
        let list = WordList::parse(entries.join("\n").as_bytes()).unwrap();
        let filter = Filter::new(&list);
        for entry in &list.entries {
            let body = &*entry.spelling;
            prop_assert!(filter.find(body).iter().any(|m| filter.entry(m) == body && m.range.start == 0), "{:?}", body);
        }
    }
}
