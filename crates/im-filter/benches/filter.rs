//! The sensitive-word filter against a 10,000-entry list (issue 12: ≤ 2 µs for a 100-byte body).
//!
//! The list is generated: 9,000 random Latin "words" of 5–10 letters and 1,000 random Han words of
//! 2–3 characters, from a fixed seed. Bodies are 100 bytes and 10 KB, all-ASCII (the common case,
//! searched in place), Latin with accents and Chinese (both normalised first), each clean and
//! with one hit at the end (so the whole body is read either way).
//!
//! `cargo bench -p im-filter`; the figures are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use im_filter::{Filter, WordList, mask};

/// splitmix64: a fixed, dependency-free sequence so every run benches the same list.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const LATIN_ENTRIES: usize = 9_000;
const HAN_ENTRIES: usize = 1_000;

/// The list file's text, and one Latin and one Han entry to plant as hits.
fn word_list() -> (String, String, String) {
    let mut rng = Rng(12);
    let mut lines = Vec::with_capacity(LATIN_ENTRIES + HAN_ENTRIES);
    for _ in 0..LATIN_ENTRIES {
        let len = 5 + rng.below(6);
        lines.push((0..len).map(|_| char::from(b'a' + rng.below(26) as u8)).collect::<String>());
    }
    for _ in 0..HAN_ENTRIES {
        let len = 2 + rng.below(2);
        lines.push((0..len).map(|_| char::from_u32(0x4E00 + rng.below(0x51A6) as u32).unwrap()).collect::<String>());
    }
    let latin_hit = lines[LATIN_ENTRIES / 2].clone();
    let han_hit = lines[LATIN_ENTRIES + HAN_ENTRIES / 2].clone();
    (lines.join("\n"), latin_hit, han_hit)
}

/// `sentence` repeated and cut (on a character boundary) to `len` bytes at most.
fn body_of(sentence: &str, len: usize) -> String {
    let mut body = String::with_capacity(len + sentence.len());
    while body.len() < len {
        body.push_str(sentence);
    }
    let mut cut = len.min(body.len());
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body.truncate(cut);
    body
}

/// The clean body with `hit` replacing its last characters, as a separate word.
fn with_hit(clean: &str, hit: &str) -> String {
    let mut keep = clean.len().saturating_sub(hit.len() + 2);
    while !clean.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{} {hit}.", &clean[..keep])
}

fn bench(c: &mut Criterion) {
    let (text, latin_hit, han_hit) = word_list();
    let list = WordList::parse(text.as_bytes()).unwrap();
    assert_eq!(list.len(), LATIN_ENTRIES + HAN_ENTRIES, "the generated list has no duplicates");
    let filter = Filter::new(&list);

    let ascii = "Are we still meeting at noon tomorrow? Bring the slides and your notes, please. Thanks! ";
    let accented = "Café crème à côté, déjà vu: naïve façade, señor Müller. Über schön. ";
    let chinese = "今天下午三点开会，请带上笔记本和资料。谢谢！";
    let mut bodies = Vec::new();
    for (name, sentence, hit) in
        [("ascii", ascii, &latin_hit), ("accented", accented, &latin_hit), ("chinese", chinese, &han_hit)]
    {
        for (size, len) in [("100B", 100), ("10KB", 10_000)] {
            let clean = body_of(sentence, len);
            assert!(!filter.is_match(&clean), "{name} {size} is clean");
            let hit = with_hit(&clean, hit);
            assert_eq!(filter.find(&hit).len(), 1, "{name} {size} has one hit");
            bodies.push((format!("{name}_{size}_clean"), clean));
            bodies.push((format!("{name}_{size}_hit"), hit));
        }
    }

    let mut group = c.benchmark_group("find");
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| filter.find(black_box(body)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("is_match");
    for (name, body) in bodies.iter().filter(|(name, _)| name.contains("100B")) {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| filter.is_match(black_box(body)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("replace");
    for (name, body) in bodies.iter().filter(|(name, _)| name.ends_with("_hit")) {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| mask(body, &filter.find(black_box(body))))
        });
    }
    group.finish();

    // Off the send path, but it bounds how fast a reload takes effect.
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_function("parse_and_compile_10k", |b| {
        b.iter(|| Filter::new(&WordList::parse(black_box(text.as_bytes())).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
