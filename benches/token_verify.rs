//! Cost of checking one signed link, per format (issue: report the verify cost per request).
//! Run: cargo bench --bench token_verify

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use video_origin::signing::keys::KeyRing;
use video_origin::signing::{akamai, cloudflare, native, Clock};

fn bench(c: &mut Criterion) {
    let key = vec![7u8; 32];
    let keys = KeyRing::new(vec![("k1".into(), key.clone())], Some("k1".into())).unwrap();
    let path = "/video/private/movie42/1080p/seg_00001.m4s";
    let req = native::MintRequest {
        path: path.into(),
        exp: 4_000_000_000,
        scope: Some("/video/private/movie42/".into()),
        ..Default::default()
    };
    let (_, query) = native::mint("k1", &key, &req).unwrap();
    let clock = Clock {
        now: 1_700_000_000,
        skew: 30,
        max_ttl: 0,
    };
    c.bench_function("verify native VO1 (prefix scope)", |b| {
        b.iter(|| native::verify(black_box(path), black_box(&query), &keys, None, clock).unwrap())
    });
    c.bench_function("verify native VO1, bad signature", |b| {
        // Same shape, wrong MAC: 43 canonical base64url characters.
        let bad = format!(
            "{}sig={}",
            query.split("sig=").next().unwrap(),
            "A".repeat(43)
        );
        b.iter(|| native::verify(black_box(path), black_box(&bad), &keys, None, clock).is_err())
    });
    let secret = b"mysecretmysecretmysecretmysecret".to_vec();
    let rule = cloudflare::CloudflareRule {
        ttl: 3600,
        url_safe: false,
        prefix_len: None,
    };
    let cfq = cloudflare::mint(&secret, path, 1_700_000_000, false);
    let secrets = vec![secret];
    c.bench_function("verify cloudflare is_timed_hmac_valid_v0", |b| {
        b.iter(|| {
            cloudflare::verify(
                black_box(path),
                black_box(&cfq),
                &secrets,
                &rule,
                Clock {
                    now: 1_700_000_010,
                    ..clock
                },
            )
            .unwrap()
        })
    });
    let ak = akamai::mint(
        &key,
        akamai::Algorithm::Sha256,
        &akamai::Fields {
            exp: 4_000_000_000,
            acl: vec!["/video/private/*".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let ak_keys = vec![key];
    c.bench_function("verify akamai edgeauth (acl)", |b| {
        b.iter(|| {
            akamai::verify(
                black_box(&ak),
                black_box(path),
                &ak_keys,
                akamai::Algorithm::Sha256,
                None,
                clock,
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
