//! Arbitrary bytes as a request target against every token parser: none may panic, and the
//! outcome must be a clean accept or a reason class (spec signed-urls §7 S-2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_origin::signing::keys::KeyRing;
use video_origin::signing::{akamai, canonical_path, cloudflare, native, Clock};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    let keys = KeyRing::new(vec![("k1".into(), vec![1u8; 32])], Some("k1".into())).unwrap();
    let clock = Clock { now: 1_700_000_000, skew: 30, max_ttl: 86_400 };
    let _ = native::verify(path, query, &keys, None, clock);
    let rule = cloudflare::CloudflareRule { ttl: 60, url_safe: data.len() % 2 == 0, prefix_len: Some(data.len() % 40) };
    let _ = cloudflare::verify(path, query, &[vec![2u8; 32]], &rule, clock);
    let _ = akamai::verify(query, path, &[vec![3u8; 16]], akamai::Algorithm::Sha256, Some("127.0.0.1"), clock);
    let _ = canonical_path(path);
});
