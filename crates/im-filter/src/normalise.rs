//! The matching form of a text, and where each of its bytes came from.
//!
//! Entries and bodies go through the same function, so what matters most is that it is applied
//! the same way to both; each step is there to defeat a cheap way of writing an entry so that it
//! looks the same to a person but not to a byte comparison.
//!
//! For each character of the original text, in order:
//!
//! 1. **Compatibility decomposition** (NFKD, one character at a time): full-width `ｂａｄ` → `bad`,
//!    ligatures `ﬁ` → `fi`, `①` → `1`, precomposed `é` → `e` + U+0301, Hangul syllables → jamo,
//!    `㈱` → `(株)`. Two strings are NFKC-equal exactly when they are NFKD-equal, so matching on
//!    the decomposed form folds what NFKC folds; it is not recomposed because nothing here needs the
//!    composed form and the decomposed one is what lets step 3 see the marks.
//! 2. **Full case folding** (`CaseFolding.txt`, statuses C and F): `ß` → `ss`, `Σ`/`ς` → `σ`,
//!    `İ` → `i` + U+0307; the result is decomposed again (a fold can produce a precomposed letter).
//! 3. **Invisible characters are dropped**: every `Cf` format character (zero-width space, joiner
//!    and non-joiner U+200B–U+200D, word joiner U+2060, BOM U+FEFF, soft hyphen U+00AD, the bidi
//!    embeddings, overrides and isolates, tag characters), and the other default-ignorable code
//!    points that are not `Cf`: variation selectors, the combining grapheme joiner, the Mongolian
//!    free variation selectors, the Hangul fillers and the Khmer inherent vowels.
//! 4. **Combining marks are dropped after letters of scripts where they are optional accents**:
//!    Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew (points), Arabic (harakat), Syriac, and
//!    Common/Inherited (digits, punctuation, or no base at all — "zalgo" text). So `b̈ąd` is `bad`
//!    and `İ` is `i`. Marks after any other base are **kept**, because there they are part of the
//!    spelling: Thai and Lao vowels and tone marks, Devanagari and the other Brahmic vowel signs and
//!    viramas, the kana voicing marks (`が` is `か` + U+3099 after step 1 and must not match `か`).
//!    Kept marks are put in canonical order (by combining class), so two canonically equivalent
//!    spellings (Thai tone mark typed before or after the vowel) are equal.
//! 5. ASCII is lower-cased; nothing else happens to it. A body that is all ASCII therefore needs
//!    no normalised copy at all (the automaton is built ASCII-case-insensitive and searches the body
//!    itself); that is the fast path in [`crate::matcher`].
//!
//! Each output byte records the byte offset of the original character that produced it, so a
//! match in the normalised text maps back to a range of original characters.
//!
//! Not done (yet): confusables (Cyrillic `а` for Latin `a`, `0` for `o`, dotless `ı`), collapsing
//! runs of spaces, and transliteration between scripts. The case-folding table is Unicode 16
//! (`caseless` 0.2); the other tables are Unicode 18, so a letter added in Unicode 17 or 18 is not
//! case-folded.

use std::sync::LazyLock;

use caseless::Caseless;
use unicode_normalization::char::{canonical_combining_class, decompose_compatible, is_combining_mark};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_script::{Script, UnicodeScript};

/// A normalised text: `text[i]` was produced by the original character starting at byte
/// `origin[i]` (one entry per byte of `text`, so the two have the same length).
#[derive(Debug, Default)]
pub(crate) struct Normalised {
    pub(crate) text: String,
    pub(crate) origin: Vec<usize>,
}

impl Normalised {
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.origin.clear();
    }

    /// Normalises all of `source` into `self` (which is cleared first).
    pub(crate) fn fill(&mut self, source: &str) {
        self.clear();
        let table = &*TABLE;
        let mut normaliser = Normaliser::default();
        for (offset, c) in source.char_indices() {
            if c.is_ascii() {
                self.push(c.to_ascii_lowercase(), offset);
                normaliser.drop_marks = true;
            } else if let Some((output, after)) = table.get(c) {
                self.text.push_str(output);
                self.origin.extend(std::iter::repeat_n(offset, output.len()));
                normaliser.drop_marks = after.unwrap_or(normaliser.drop_marks);
            } else {
                normaliser.push(self, c, offset);
            }
        }
    }

    /// [`Normalised::fill`] without the table: the definition the table is checked against.
    #[cfg(test)]
    fn fill_without_table(&mut self, source: &str) {
        self.clear();
        let mut normaliser = Normaliser::default();
        for (offset, c) in source.char_indices() {
            normaliser.push(self, c, offset);
        }
    }

    fn push(&mut self, c: char, origin: usize) {
        self.text.push(c);
        self.origin.extend(std::iter::repeat_n(origin, c.len_utf8()));
    }

    /// Appends the kept mark `mark` in canonical order: before any marks already at the end of the
    /// text that have a higher combining class (a stable sort, as canonical ordering is).
    fn push_mark(&mut self, mark: char, origin: usize) {
        let class = canonical_combining_class(mark);
        let mut at = self.text.len();
        if class != 0 {
            while let Some(previous) = self.text[..at].chars().next_back() {
                if canonical_combining_class(previous) <= class {
                    break;
                }
                at -= previous.len_utf8();
            }
        }
        self.text.insert(at, mark);
        self.origin.splice(at..at, std::iter::repeat_n(origin, mark.len_utf8()));
    }
}

/// The normalisation of each non-ASCII character of the Basic Multilingual Plane whose result does
/// not depend on the characters before it — nearly all of them: letters (accented or not, any case,
/// any width), ideographs, kana, invisible characters. Looking the answer up costs a few
/// nanoseconds; working it out (decompose, fold, decompose, look up the category and the script)
/// costs around a hundred, which made a 100-byte Chinese body cost 3.5 µs. Combining marks, whose
/// fate depends on their base, and characters outside the BMP take the long way.
///
/// Built on first use (about 65,000 characters through the long way, some milliseconds);
/// [`warm_up`] builds it ahead of the first message.
struct Table {
    /// Per BMP code point: `offset << 8 | len << 3 | after << 1 | TABLED`, where
    /// `outputs[offset..offset + len]` is the normalised text and `after` says what happens to
    /// marks that follow (see [`Table::get`]).
    entries: Vec<u32>,
    outputs: String,
}

static TABLE: LazyLock<Table> = LazyLock::new(Table::build);

const TABLED: u32 = 1;
const AFTER_UNCHANGED: u32 = 0;
const AFTER_DROP: u32 = 1;
const AFTER_KEEP: u32 = 2;

impl Table {
    fn build() -> Table {
        let mut entries = vec![0; 0x1_0000];
        let mut outputs = String::new();
        let (mut from_drop, mut from_keep) = (Normalised::default(), Normalised::default());
        for c in ('\u{80}'..='\u{FFFF}').filter(|c| !c.is_ascii()) {
            // The long way twice, after a base whose marks are dropped and after one whose marks
            // are kept: the character is tabled only if that makes no difference to its output.
            from_drop.clear();
            from_keep.clear();
            let mut after_drop = Normaliser { drop_marks: true };
            let mut after_keep = Normaliser { drop_marks: false };
            after_drop.push(&mut from_drop, c, 0);
            after_keep.push(&mut from_keep, c, 0);
            let after = match (after_drop.drop_marks, after_keep.drop_marks) {
                (true, false) => AFTER_UNCHANGED,
                (true, true) => AFTER_DROP,
                (false, false) => AFTER_KEEP,
                (false, true) => continue,
            };
            let len = from_drop.text.len();
            if from_drop.text != from_keep.text || len > 31 {
                continue;
            }
            let offset = u32::try_from(outputs.len()).expect("a few hundred KiB");
            outputs.push_str(&from_drop.text);
            entries[c as usize] = offset << 8 | (len as u32) << 3 | after << 1 | TABLED;
        }
        debug_assert!(outputs.len() < 1 << 24);
        Table { entries, outputs }
    }

    /// The normalised text of `c`, and whether marks after it are dropped (`Some(true)`), kept
    /// (`Some(false)`), or treated as they were before it (`None`, for invisible characters).
    #[inline]
    fn get(&self, c: char) -> Option<(&str, Option<bool>)> {
        let entry = *self.entries.get(c as usize)?;
        if entry & TABLED == 0 {
            return None;
        }
        let offset = (entry >> 8) as usize;
        let len = ((entry >> 3) & 31) as usize;
        let after = match (entry >> 1) & 3 {
            AFTER_DROP => Some(true),
            AFTER_KEEP => Some(false),
            _ => None,
        };
        Some((&self.outputs[offset..offset + len], after))
    }
}

/// Builds the per-character table now rather than on the first non-ASCII body.
pub(crate) fn warm_up() {
    LazyLock::force(&TABLE);
}

/// The normalised form of `s` on its own (used for entries, and by tests).
pub(crate) fn normalise(s: &str) -> String {
    let mut out = Normalised::default();
    out.fill(s);
    out.text
}

/// The state carried from one character to the next: whether a combining mark met now would
/// belong to a base whose marks are dropped (step 4 of the module docs).
struct Normaliser {
    drop_marks: bool,
}

impl Default for Normaliser {
    fn default() -> Self {
        // A mark with no base before it is dropped.
        Normaliser { drop_marks: true }
    }
}

impl Normaliser {
    fn push(&mut self, out: &mut Normalised, c: char, origin: usize) {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase(), origin);
            self.drop_marks = true;
            return;
        }
        if is_invisible(c) {
            return;
        }
        decompose_compatible(c, |decomposed| {
            for folded in std::iter::once(decomposed).default_case_fold() {
                decompose_compatible(folded, |part| self.push_final(out, part, origin));
            }
        });
    }

    /// `c` is decomposed and case-folded: keep it, drop it, or put it in canonical order.
    fn push_final(&mut self, out: &mut Normalised, c: char, origin: usize) {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase(), origin);
            self.drop_marks = true;
        } else if is_invisible(c) {
            // Nothing: an invisible character neither appears nor changes the base.
        } else if is_combining_mark(c) {
            if !self.drop_marks {
                out.push_mark(c, origin);
            }
        } else {
            self.drop_marks = marks_are_accents(c.script());
            out.push(c, origin);
        }
    }
}

/// Whether `c` is ignored entirely: `Cf`, plus the default-ignorable code points of other
/// categories (see the module docs, step 3).
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    ) || c.general_category() == GeneralCategory::Format
}

/// Scripts whose combining marks are optional accents, dropped so that `b̈ąd` is `bad`.
fn marks_are_accents(script: Script) -> bool {
    matches!(
        script,
        Script::Latin
            | Script::Greek
            | Script::Cyrillic
            | Script::Armenian
            | Script::Georgian
            | Script::Hebrew
            | Script::Arabic
            | Script::Syriac
            | Script::Common
            | Script::Inherited
            | Script::Unknown
    )
}

/// Whether an entry containing `c` matches anywhere rather than as a whole word: `c` belongs to a
/// script written without spaces between words.
pub(crate) fn is_unspaced(c: char) -> bool {
    matches!(
        c.script(),
        Script::Han
            | Script::Hiragana
            | Script::Katakana
            | Script::Bopomofo
            | Script::Yi
            | Script::Thai
            | Script::Lao
            | Script::Khmer
            | Script::Myanmar
            | Script::Tibetan
            | Script::Tai_Le
            | Script::New_Tai_Lue
            | Script::Tai_Tham
            | Script::Tai_Viet
            | Script::Balinese
            | Script::Javanese
            | Script::Buginese
            | Script::Phags_Pa
            | Script::Tangut
            | Script::Nushu
            | Script::Khitan_Small_Script
    )
}

/// A character that makes up words, for the whole-word rule: alphanumeric, a (kept) mark, or
/// connector punctuation such as `_`.
pub(crate) fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    c.is_alphanumeric() || is_combining_mark(c) || c.general_category() == GeneralCategory::ConnectorPunctuation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_width_case_ligatures_and_marks() {
        assert_eq!(normalise("ｂａｄ"), "bad");
        assert_eq!(normalise("BaD"), "bad");
        assert_eq!(normalise("ＢＡＤ"), "bad");
        assert_eq!(normalise("ﬁne"), "fine");
        assert_eq!(normalise("Straße"), "strasse");
        assert_eq!(normalise("STRASSE"), "strasse");
        assert_eq!(normalise("İstanbul"), "istanbul");
        assert_eq!(normalise("ΣΑΣ"), normalise("σας"));
        assert_eq!(normalise("b̈ąd"), "bad");
        assert_eq!(normalise("café"), "cafe");
        assert_eq!(normalise("ПРИВЕТ"), "привет");
        assert_eq!(normalise("ά"), "α");
    }

    #[test]
    fn drops_invisible_characters() {
        for invisible in
            ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{FE0F}', '\u{202E}']
        {
            assert_eq!(normalise(&format!("b{invisible}ad")), "bad", "U+{:04X}", invisible as u32);
        }
        assert_eq!(normalise("\u{E0101}x\u{2066}y\u{2069}"), "xy");
    }

    #[test]
    fn keeps_the_marks_that_spell_thai_devanagari_and_kana() {
        // Thai: sara i (U+0E34) and mai ek (U+0E48) are marks that change the word.
        assert_eq!(normalise("กิน"), "กิน");
        assert_ne!(normalise("กิน"), normalise("กน"));
        assert_eq!(normalise("हिंदी"), "हिंदी");
        // が decomposes to か + U+3099 and must stay distinct from か; the half-width form folds to it.
        assert_ne!(normalise("が"), normalise("か"));
        assert_eq!(normalise("ｶﾞ"), normalise("ガ"));
    }

    #[test]
    fn kept_marks_are_in_canonical_order() {
        // Thai sara u (U+0E38, class 103) and mai ek (U+0E48, class 107) typed in either order.
        let canonical = "\u{0E1B}\u{0E38}\u{0E48}";
        let swapped = "\u{0E1B}\u{0E48}\u{0E38}";
        assert_eq!(normalise(swapped), canonical);
        // Origins follow their characters when reordered.
        let mut out = Normalised::default();
        out.fill(swapped);
        assert_eq!(out.text, canonical);
        assert_eq!(out.origin, [0, 0, 0, 6, 6, 6, 3, 3, 3]);
    }

    #[test]
    fn origins_point_at_the_original_characters() {
        let mut out = Normalised::default();
        out.fill("Aﬁ\u{200B}é");
        assert_eq!(out.text, "afie");
        assert_eq!(out.origin, [0, 1, 1, 7]);
    }

    /// Normalising twice changes nothing, for every character: the form is a fixed point, so an
    /// entry matches its own normalised spelling.
    #[test]
    fn normalisation_is_idempotent_for_every_character() {
        let mut failures = Vec::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            // Alone, after a base whose marks are dropped, and after one whose marks are kept.
            for text in [c.to_string(), format!("a{c}"), format!("\u{0E01}{c}")] {
                let once = normalise(&text);
                if normalise(&once) != once {
                    failures.push(format!("U+{:04X}", c as u32));
                }
            }
        }
        assert!(failures.is_empty(), "{} characters: {:?}", failures.len(), &failures[..failures.len().min(20)]);
    }

    /// The table gives what the long way gives, for every BMP character in every context that
    /// matters: no base, a base whose marks are dropped, one whose marks are kept, after a kept mark.
    #[test]
    fn the_table_agrees_with_the_long_way() {
        let (mut tabled, mut long_way) = (Normalised::default(), Normalised::default());
        let mut tabled_count = 0;
        for c in ('\u{80}'..='\u{FFFF}').filter(|c| !c.is_ascii()) {
            tabled_count += usize::from(TABLE.get(c).is_some());
            for before in ["", "a", "\u{0E01}", "\u{0E01}\u{0E48}", "\u{200B}", "\u{0E01}\u{200B}"] {
                // Twice, so that marks after the character see the state it left.
                let text = format!("{before}{c}\u{0301}\u{0E48}{c}");
                tabled.fill(&text);
                long_way.fill_without_table(&text);
                assert_eq!(tabled.text, long_way.text, "U+{:04X} after {before:?}", c as u32);
                assert_eq!(tabled.origin, long_way.origin, "U+{:04X} after {before:?}", c as u32);
            }
        }
        assert!(tabled_count > 60_000, "{tabled_count} characters tabled");
    }

    #[test]
    fn scripts_without_spaces() {
        assert!(is_unspaced('中'));
        assert!(is_unspaced('ひ'));
        assert!(is_unspaced('カ'));
        assert!(is_unspaced('ก'));
        assert!(!is_unspaced('a'));
        assert!(!is_unspaced('я'));
        assert!(!is_unspaced('한'));
        assert!(!is_unspaced('ب'));
    }

    #[test]
    fn word_characters() {
        assert!(is_word_char('a'));
        assert!(is_word_char('7'));
        assert!(is_word_char('_'));
        assert!(is_word_char('é'));
        assert!(is_word_char('\u{0E34}'));
        assert!(is_word_char('\u{203F}'));
        assert!(!is_word_char(' '));
        assert!(!is_word_char('.'));
        assert!(!is_word_char('*'));
        assert!(!is_word_char('\u{3002}'));
    }
}
