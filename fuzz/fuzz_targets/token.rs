//! A bearer token from a client (WebSocket handshake, gRPC metadata): any
//! text is verified to an identity or refused, never a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static TOKENS: LazyLock<im_auth::Tokens> =
    LazyLock::new(|| im_auth::Tokens::new(b"fuzz-secret-fuzz-secret-fuzz-sec").expect("a 32-byte secret"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = TOKENS.verify(text);
    let _ = TOKENS.verify_bearer(text);
});
