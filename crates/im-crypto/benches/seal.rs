//! Sealing and opening message bodies (issue 13: ≤ 1 µs for a 100-byte body with AES-NI).
//!
//! Bodies of 100 bytes and 10 KB under one data key, as the send path and sync use it: the key's
//! AES schedule is expanded once, when the `DataKey` is made (after unwrapping), not per body.
//! Each seal draws a fresh nonce from the thread's CSPRNG, as in production.
//!
//! `cargo bench -p im-crypto`; the figures are in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use im_crypto::{BodyAad, DataKey, open, seal};
use zeroize::Zeroizing;

fn bodies(c: &mut Criterion) {
    let key = DataKey::new(1, Zeroizing::new([0x5a; 32]));
    // A group conversation id of a typical length and row numbers of a busy one.
    let aad = BodyAad { conversation: "g:1234567890", seq: 1_234_567, sender: 42_424_242, msg_id: 7_777_777_777 };

    let mut group = c.benchmark_group("body");
    for len in [100usize, 10_000] {
        let body: Vec<u8> = (0..len).map(|i| b"the quick brown fox jumps over the lazy dog "[i % 44]).collect();
        let sealed = seal(&key, &aad, &body);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("seal", len), &body, |b, body| {
            b.iter(|| seal(black_box(&key), black_box(&aad), black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("open", len), &sealed, |b, sealed| {
            b.iter(|| open(black_box(&key), black_box(&aad), black_box(sealed)).unwrap())
        });
    }
    group.finish();

    // What a cache miss adds on top of the KMS call: expanding a new key's AES schedule.
    c.bench_function("data_key_new", |b| b.iter(|| DataKey::new(1, Zeroizing::new(black_box([0x5a; 32])))));
}

criterion_group!(benches, bodies);
criterion_main!(benches);
