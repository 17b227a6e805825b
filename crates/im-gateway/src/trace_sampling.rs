//! Whether a client send starts a trace, decided before any span is made.
//!
//! The `gateway.frame` root span cost 7–8 µs per message at saturation even
//! when the sampler then dropped it (BENCHMARKS.md, tracing overhead): the
//! span was built, entered and closed for every message. Deciding first makes
//! an unsampled message cost one random number. The process's trace sampler
//! keeps every `gateway.frame` it is given (im-service's
//! `telemetry::sampler`), so a message is traced with exactly this ratio.

use std::sync::atomic::{AtomicU64, Ordering};

/// `f64` bits of the ratio; 0.0 until trace export starts.
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0);

/// The share of client sends that start a trace (clamped to 0..=1). Set once
/// at start by the process's trace export.
pub fn set_root_ratio(ratio: f64) {
    ROOT_RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

/// Whether this send starts a trace.
pub(crate) fn start_trace() -> bool {
    let ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}
