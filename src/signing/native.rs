//! VO1: our native token (spec signed-urls §8). HMAC-SHA256 over seven LF-joined lines:
//! format tag, key id, expiry, not-before, mode (exact | prefix), canonical path or scope,
//! canonical client IP. Carried as `exp`, `nbf`, `kid`, `scope`, `ip`, `sig` query parameters.
//!
//! Verification order (§8.5): presence → syntax → key → MAC (constant time) → IP → time →
//! scope. Nothing time- or scope-related is revealed before the MAC has been checked.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::keys::{valid_kid, KeyRing};
use super::{
    canonical_ip, canonical_path, ct_eq, hmac_sha256, malformed, single_param, split_query, Clock,
    Reason, Rejection,
};

/// The cookie that carries a VO1 token: its value is the token's query parameters exactly as a
/// link carries them (cookie-safe: digits, key ids, canonical paths, base64url).
pub const COOKIE: &str = "VO1";

/// What a valid token granted (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub kid: String,
    pub exp: u64,
    pub prefix: Option<String>,
}

/// What to sign.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    /// The URL path as requested (raw or decoded: it is canonicalised).
    pub path: String,
    pub exp: u64,
    pub nbf: Option<u64>,
    /// Sign for every path under this directory (must end in `/`).
    pub scope: Option<String>,
    pub ip: Option<IpAddr>,
}

fn string_to_sign(
    kid: &str,
    exp: u64,
    nbf: Option<u64>,
    prefix: bool,
    path: &str,
    ip: Option<&str>,
) -> String {
    format!(
        "VO1-HMAC-SHA256\n{kid}\n{exp}\n{}\n{}\n{path}\n{}",
        nbf.map(|n| n.to_string()).unwrap_or_default(),
        if prefix { "prefix" } else { "exact" },
        ip.unwrap_or("")
    )
}

/// Mints a token with `kid`/`key`; returns (canonical path, query string).
pub fn mint(kid: &str, key: &[u8], req: &MintRequest) -> Result<(String, String), String> {
    if !valid_kid(kid) {
        return Err("invalid key id".into());
    }
    let path = canonical_path(&req.path).map_err(|r| format!("path: {}", r.detail))?;
    let scope = match &req.scope {
        Some(s) => {
            let s = canonical_path(s).map_err(|r| format!("scope: {}", r.detail))?;
            if !s.ends_with('/') {
                return Err("scope must end with `/`".into());
            }
            if !path.starts_with(&s) {
                return Err("path is not under scope".into());
            }
            Some(s)
        }
        None => None,
    };
    if let Some(nbf) = req.nbf {
        if nbf >= req.exp {
            return Err("nbf must be before exp".into());
        }
    }
    let ip = req.ip.map(|ip| canonical_ip(ip).to_string());
    let signed_path = scope.as_deref().unwrap_or(&path);
    let sts = string_to_sign(
        kid,
        req.exp,
        req.nbf,
        scope.is_some(),
        signed_path,
        ip.as_deref(),
    );
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(key, sts.as_bytes()));
    let mut q = format!("exp={}", req.exp);
    if let Some(nbf) = req.nbf {
        q.push_str(&format!("&nbf={nbf}"));
    }
    q.push_str(&format!("&kid={kid}"));
    if let Some(s) = &scope {
        q.push_str(&format!("&scope={s}"));
    }
    if let Some(ip) = &ip {
        q.push_str(&format!("&ip={ip}"));
    }
    q.push_str(&format!("&sig={sig}"));
    Ok((path, q))
}

fn parse_time(name: &str, v: &str) -> Result<u64, Rejection> {
    let ok = v == "0"
        || (!v.is_empty()
            && v.len() <= 11
            && !v.starts_with('0')
            && v.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(malformed(format!("`{name}` is not a Unix time")));
    }
    v.parse()
        .map_err(|_| malformed(format!("`{name}` out of range")))
}

/// Whether the query carries any VO1 parameter (so another format may be tried instead).
pub fn present(query: &str) -> bool {
    query
        .split('&')
        .any(|p| p.starts_with("sig=") || p.starts_with("kid=") || p.starts_with("exp="))
}

/// Verifies a request: `raw_path` and `query` exactly as in the request target.
pub fn verify(
    raw_path: &str,
    query: &str,
    keys: &KeyRing,
    client: Option<IpAddr>,
    clock: Clock,
) -> Result<Claims, Rejection> {
    let params = split_query(query)?;
    let get = |n| single_param(&params, n);
    let (exp, kid, sig) = (get("exp")?, get("kid")?, get("sig")?);
    let (Some(exp), Some(kid), Some(sig)) = (exp, kid, sig) else {
        if get("exp")?.is_none() && get("kid")?.is_none() && get("sig")?.is_none() {
            return Err(Rejection::new(Reason::Missing, "no token parameters"));
        }
        return Err(malformed("token needs exp, kid and sig"));
    };
    let exp = parse_time("exp", &exp)?;
    let nbf = get("nbf")?.map(|v| parse_time("nbf", &v)).transpose()?;
    if nbf.is_some_and(|n| n >= exp) {
        return Err(malformed("nbf is not before exp"));
    }
    if !valid_kid(&kid) {
        return Err(malformed("bad kid syntax"));
    }
    // sig: exactly 43 canonical b64url chars (the decoder refuses nonzero trailing bits).
    if sig.len() != 43 {
        return Err(malformed("sig must be 43 characters"));
    }
    let mac = URL_SAFE_NO_PAD
        .decode(&sig)
        .map_err(|_| malformed("sig is not canonical base64url"))?;
    let path = canonical_path(raw_path)?;
    let scope = match get("scope")? {
        Some(s) => {
            let c = canonical_path(&s)?;
            if !c.ends_with('/') {
                return Err(malformed("scope must end with /"));
            }
            if c != s {
                return Err(malformed("scope is not in canonical form"));
            }
            Some(c)
        }
        None => None,
    };
    let ip = match get("ip")? {
        Some(text) => {
            let parsed: IpAddr = text
                .parse()
                .map_err(|_| malformed("ip is not an address"))?;
            if canonical_ip(parsed).to_string() != text {
                return Err(malformed("ip is not in canonical form"));
            }
            Some((text, canonical_ip(parsed)))
        }
        None => None,
    };
    let key = keys
        .get(&kid)
        .ok_or_else(|| Rejection::new(Reason::UnknownKey, format!("kid {kid}")))?;
    let signed_path = scope.as_deref().unwrap_or(&path);
    let sts = string_to_sign(
        &kid,
        exp,
        nbf,
        scope.is_some(),
        signed_path,
        ip.as_ref().map(|(t, _)| t.as_str()),
    );
    if !ct_eq(&hmac_sha256(key, sts.as_bytes()), &mac) {
        return Err(Rejection::new(Reason::BadSignature, format!("kid {kid}")));
    }
    if let Some((_, want)) = ip {
        if client.map(canonical_ip) != Some(want) {
            return Err(Rejection::new(
                Reason::WrongIp,
                "client address differs from ip",
            ));
        }
    }
    clock.check_window(nbf, exp)?;
    if let Some(scope) = &scope {
        if !path.starts_with(scope.as_str()) {
            return Err(Rejection::new(
                Reason::WrongScope,
                format!("path outside scope {scope}"),
            ));
        }
    }
    Ok(Claims {
        kid,
        exp,
        prefix: scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::keys::decode_secret;

    fn ring() -> KeyRing {
        let k1 =
            decode_secret("hex:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
                .unwrap();
        let k2 =
            decode_secret("hex:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                .unwrap();
        KeyRing::new(
            vec![("k1".into(), k1), ("k2".into(), k2)],
            Some("k1".into()),
        )
        .unwrap()
    }

    fn clock(now: u64) -> Clock {
        Clock {
            now,
            skew: 30,
            max_ttl: 0,
        }
    }

    fn v(target: &str, client: Option<&str>, now: u64) -> Result<Claims, Reason> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        verify(
            path,
            query,
            &ring(),
            client.map(|c| c.parse().unwrap()),
            clock(now),
        )
        .map_err(|r| r.reason)
    }

    const N1: &str = "/video/private/movie42/master.m3u8?exp=1893456000&kid=k1&sig=VqbTXMWtGuhCt6gnm5Uh_y6GQmQhKgRlkSLPJsmdScY";
    const N2: &str = "/video/private/movie42/1080p/seg_00001.m4s?exp=1893456000&nbf=1893452400&kid=k1&scope=/video/private/movie42/&sig=20hmCmPYar6mi1hOitO4QVWfRkMjp8LhpAVaH_5mi-I";
    const N3: &str = "/video/private/a%20b/cl%C3%A9.mp4?exp=1700000000&kid=k2&ip=203.0.113.7&sig=wSn5sunE4sQJFpsYHZX1H5evyECrJEbOA5aWteguYRc";
    const N4: &str = "/video/private/trailers/t1.mp4?exp=4102444800&nbf=1700000000&kid=k2&scope=/video/private/&ip=2001:db8::1&sig=rsFJevsHi4g5GBWi6IsrqQIs84dd6qIW4n3YjGnWBso";

    #[test]
    fn known_answer_vectors_mint() {
        // spec: signed-urls §8.7 N-1..N-4
        let k = |id: &str| ring().get(id).unwrap().to_vec();
        let m = |kid: &str, req: MintRequest| {
            let (p, q) = mint(kid, &k(kid), &req).unwrap();
            format!("{p}?{q}")
        };
        assert_eq!(
            m(
                "k1",
                MintRequest {
                    path: "/video/private/movie42/master.m3u8".into(),
                    exp: 1893456000,
                    ..Default::default()
                }
            ),
            N1
        );
        assert_eq!(
            m(
                "k1",
                MintRequest {
                    path: "/video/private/movie42/1080p/seg_00001.m4s".into(),
                    exp: 1893456000,
                    nbf: Some(1893452400),
                    scope: Some("/video/private/movie42/".into()),
                    ip: None
                }
            ),
            N2
        );
        assert_eq!(
            m(
                "k2",
                MintRequest {
                    path: "/video/private/a b/clé.mp4".into(),
                    exp: 1700000000,
                    ip: Some("203.0.113.7".parse().unwrap()),
                    ..Default::default()
                }
            ),
            N3
        );
        assert_eq!(
            m(
                "k2",
                MintRequest {
                    path: "/video/private/trailers/t1.mp4".into(),
                    exp: 4102444800,
                    nbf: Some(1700000000),
                    scope: Some("/video/private/".into()),
                    ip: Some("2001:db8::1".parse().unwrap())
                }
            ),
            N4
        );
        let (_, q) = mint(
            "k1",
            &k("k1"),
            &MintRequest {
                path: "/video/private/movie42/".into(),
                exp: 1893456000,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            q.ends_with("sig=kkY6RxGnc398jQRGBn1kSYuFtOpPHYCPSEUI7dGXQ7c"),
            "{q}"
        );
    }

    #[test]
    fn known_answer_vectors_verify() {
        assert!(v(N1, None, 1_800_000_000).is_ok());
        assert!(v(N2, None, 1893452400).is_ok());
        assert!(v(N3, Some("203.0.113.7"), 1699999000).is_ok());
        assert!(v(N4, Some("2001:db8::1"), 1800000000).is_ok());
    }

    #[test]
    fn negative_cases() {
        // spec: signed-urls §8.7 negative cases
        use Reason::*;
        assert_eq!(
            v(
                &format!("{N1}&scope=/video/private/movie42/"),
                None,
                1_800_000_000
            ),
            Err(BadSignature)
        );
        let exact_dir = "/video/private/movie42/x.ts?exp=1893456000&kid=k1&scope=/video/private/movie42/&sig=kkY6RxGnc398jQRGBn1kSYuFtOpPHYCPSEUI7dGXQ7c";
        assert_eq!(
            v(exact_dir, None, 1_800_000_000),
            Err(BadSignature),
            "an exact token cannot become a prefix grant"
        );
        let n2_query = N2.split_once('?').unwrap().1;
        assert_eq!(
            v(
                &format!("/video/private/movie420/x.ts?{n2_query}"),
                None,
                1893452400
            ),
            Err(WrongScope)
        );
        assert_eq!(v(N2, None, 1893452369), Err(NotYetValid));
        assert!(v(N2, None, 1893452370).is_ok());
        assert!(v(N1, None, 1893456029).is_ok());
        assert_eq!(v(N1, None, 1893456030), Err(Expired));
        assert_eq!(v(N3, Some("203.0.113.8"), 1699999000), Err(WrongIp));
        assert!(v(N3, Some("::ffff:203.0.113.7"), 1699999000).is_ok());
        assert_eq!(v(N3, None, 1699999000), Err(WrongIp));
        assert_eq!(
            v(&N3.replace("YRc", "YRd"), Some("203.0.113.7"), 1699999000),
            Err(Malformed),
            "non-canonical last char"
        );
        assert_eq!(
            v(
                &N3.replace("ip=203.0.113.7", "ip=203.000.113.7"),
                Some("203.0.113.7"),
                1699999000
            ),
            Err(Malformed)
        );
        assert_eq!(
            v(&N1.replace("/movie42/", "/%2e%2e/"), None, 1_800_000_000),
            Err(Malformed)
        );
        let n1_query = N1.split_once('?').unwrap().1;
        assert_eq!(
            v(&format!("{N1}&{n1_query}"), None, 1_800_000_000),
            Err(Malformed)
        );
        assert_eq!(
            v(&N1.replace("kid=k1", "kid=k9"), None, 1_800_000_000),
            Err(UnknownKey)
        );
        assert_eq!(v("/video/private/a.mp4", None, 1), Err(Missing));
        assert_eq!(v("/video/private/a.mp4?exp=5", None, 1), Err(Malformed));
        assert_eq!(
            v(&N1.replace("exp=1893456000", "exp=01893456000"), None, 1),
            Err(Malformed)
        );
        assert_eq!(v(&N1.replace("sig=V", "sig=%V"), None, 1), Err(Malformed));
        // A changed signature of the right shape is a bad signature, not malformed.
        assert_eq!(
            v(&N1.replace("sig=V", "sig=W"), None, 1_800_000_000),
            Err(BadSignature)
        );
    }

    #[test]
    fn max_ttl_is_enforced_at_verify_time() {
        let (path, query) = N1.split_once('?').unwrap();
        let c = Clock {
            now: 1_893_000_000,
            skew: 30,
            max_ttl: 3600,
        };
        assert_eq!(
            verify(path, query, &ring(), None, c).unwrap_err().reason,
            Reason::Malformed
        );
    }

    #[test]
    fn mint_refuses_bad_requests() {
        let key = [1u8; 32];
        let bad = |r: MintRequest| mint("k1", &key, &r).is_err();
        assert!(bad(MintRequest {
            path: "/a/../b".into(),
            exp: 10,
            ..Default::default()
        }));
        assert!(bad(MintRequest {
            path: "/a/b".into(),
            exp: 10,
            scope: Some("/a".into()),
            ..Default::default()
        }));
        assert!(bad(MintRequest {
            path: "/x/b".into(),
            exp: 10,
            scope: Some("/a/".into()),
            ..Default::default()
        }));
        assert!(bad(MintRequest {
            path: "/a/b".into(),
            exp: 10,
            nbf: Some(10),
            ..Default::default()
        }));
    }
}
