//! CloudFront signed URLs (spec signed-urls §3), minted here for deployments where CloudFront
//! checks links at the edge with a trusted key group. The origin never verifies these.
//!
//! Canned policy: `?Expires=…&Signature=…&Key-Pair-Id=…`; custom policy (start time, IP range,
//! wildcard resource): `?Policy=…&Signature=…&Key-Pair-Id=…`. Signature = RSA PKCS#1 v1.5 over
//! the policy JSON with SHA-1 (CloudFront's default) or SHA-256 (adds `Hash-Algorithm=SHA256`),
//! in CloudFront's base64 variant (`+`→`-`, `=`→`_`, `/`→`~`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

pub struct CloudFrontSigner {
    key: RsaPrivateKey,
    key_pair_id: String,
    hash: Hash,
}

impl std::fmt::Debug for CloudFrontSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudFrontSigner")
            .field("key_pair_id", &self.key_pair_id)
            .field("bits", &(self.key.size() * 8))
            .finish()
    }
}

/// A custom policy's conditions.
#[derive(Debug, Clone, Default)]
pub struct Custom {
    /// Resource pattern (`*`, `?` allowed); defaults to the URL itself.
    pub resource: Option<String>,
    pub start: Option<u64>,
    /// IPv4 CIDR (`a.b.c.d/n`); CloudFront does not support IPv6 here.
    pub source_ip: Option<String>,
}

/// CloudFront's base64: standard alphabet with `+`→`-`, `=`→`_`, `/`→`~`.
pub fn cfb64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The canned policy CloudFront rebuilds from the URL (exact bytes matter).
pub fn canned_policy(url: &str, expires: u64) -> String {
    format!(
        "{{\"Statement\":[{{\"Resource\":{},\"Condition\":{{\"DateLessThan\":{{\"AWS:EpochTime\":{expires}}}}}}}]}}",
        json_string(url)
    )
}

/// A custom policy, conditions in botocore's order (DateLessThan, IpAddress, DateGreaterThan).
pub fn custom_policy(resource: &str, expires: u64, c: &Custom) -> String {
    let mut cond = format!("\"DateLessThan\":{{\"AWS:EpochTime\":{expires}}}");
    if let Some(ip) = &c.source_ip {
        cond.push_str(&format!(
            ",\"IpAddress\":{{\"AWS:SourceIp\":{}}}",
            json_string(ip)
        ));
    }
    if let Some(st) = c.start {
        cond.push_str(&format!(",\"DateGreaterThan\":{{\"AWS:EpochTime\":{st}}}"));
    }
    format!(
        "{{\"Statement\":[{{\"Resource\":{},\"Condition\":{{{cond}}}}}]}}",
        json_string(resource)
    )
}

impl CloudFrontSigner {
    /// Loads a PEM private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    /// `min_bits` lets production refuse small keys (CloudFront accepts RSA 2048).
    pub fn from_pem(
        pem: &str,
        key_pair_id: &str,
        hash: Hash,
        min_bits: usize,
    ) -> Result<Self, String> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| "not an RSA private key in PEM (PKCS#8 or PKCS#1)".to_string())?;
        if key.size() * 8 < min_bits {
            return Err(format!(
                "RSA key has {} bits; at least {min_bits} required",
                key.size() * 8
            ));
        }
        if key_pair_id.is_empty() || !key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("key_pair_id must be alphanumeric".into());
        }
        Ok(CloudFrontSigner {
            key,
            key_pair_id: key_pair_id.to_owned(),
            hash,
        })
    }

    /// RSA PKCS#1 v1.5 signature of `policy`, in cfb64.
    pub fn sign_policy(&self, policy: &str) -> String {
        use sha2::Digest;
        let sig = match self.hash {
            Hash::Sha1 => self.key.sign(
                Pkcs1v15Sign::new::<sha1::Sha1>(),
                &sha1::Sha1::digest(policy.as_bytes()),
            ),
            Hash::Sha256 => self.key.sign(
                Pkcs1v15Sign::new::<sha2::Sha256>(),
                &sha2::Sha256::digest(policy.as_bytes()),
            ),
        };
        // Signing with a valid private key and a correctly sized digest cannot fail.
        cfb64(&sig.expect("PKCS#1 v1.5 signing"))
    }

    fn tail(&self) -> String {
        let mut t = format!("&Key-Pair-Id={}", self.key_pair_id);
        if self.hash == Hash::Sha256 {
            t.push_str("&Hash-Algorithm=SHA256");
        }
        t
    }

    /// Canned-policy signed URL for `url` (scheme, host, encoded path, own query).
    pub fn sign_canned(&self, url: &str, expires: u64) -> String {
        let sig = self.sign_policy(&canned_policy(url, expires));
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}Expires={expires}&Signature={sig}{}", self.tail())
    }

    /// Custom-policy signed URL.
    pub fn sign_custom(&self, url: &str, expires: u64, c: &Custom) -> String {
        let policy = custom_policy(c.resource.as_deref().unwrap_or(url), expires, c);
        let sig = self.sign_policy(&policy);
        let sep = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{sep}Policy={}&Signature={sig}{}",
            cfb64(policy.as_bytes()),
            self.tail()
        )
    }

    /// Signed cookies (spec signed-urls §3.5) for a custom policy: `CloudFront-Policy`,
    /// `-Signature`, `-Key-Pair-Id` (and `-Hash-Algorithm` with SHA-256), as (name, value).
    /// `resource` is the URL pattern the cookies grant, e.g. `https://dxxx/video/movie42/*`
    /// (always set: a policy without one covers everything the key group protects).
    pub fn signed_cookies(
        &self,
        resource: &str,
        expires: u64,
        c: &Custom,
    ) -> Vec<(&'static str, String)> {
        let policy = custom_policy(resource, expires, c);
        let mut cookies = vec![
            ("CloudFront-Policy", cfb64(policy.as_bytes())),
            ("CloudFront-Signature", self.sign_policy(&policy)),
            ("CloudFront-Key-Pair-Id", self.key_pair_id.clone()),
        ];
        if self.hash == Hash::Sha256 {
            cookies.push(("CloudFront-Hash-Algorithm", "SHA256".into()));
        }
        cookies
    }

    pub fn public_key(&self) -> rsa::RsaPublicKey {
        self.key.to_public_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/cloudfront/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn sep(hash: Hash) -> CloudFrontSigner {
        CloudFrontSigner::from_pem(&pem("sep-rsa-1024.pem"), "K1TESTKEY", hash, 1024).unwrap()
    }

    const EXP: u64 = 1767290400;

    #[test]
    fn sep_vectors() {
        // spec: signed-urls §3.7 SEP-1..SEP-5, SEP-9, SEP-1-SHA256
        let s = sep(Hash::Sha1);
        assert_eq!(
            s.sign_canned("https://d111111abcdef8.cloudfront.net/image.jpg", EXP),
            "https://d111111abcdef8.cloudfront.net/image.jpg?Expires=1767290400&Signature=iONoMLnhiCy9q1~WB9GkR2DiHz18I85i3o6kZ64REf-fCSOg-AyXEZiq7fJuS~DT-kbZXjVpgIQqI4sCTcBW9XpO6dyJ5sh8Igk3V~OVncS9acGVnI~ZhHBWiGhU8GmkEMAhn6R2RGO-wKGClrXdJGEUE26XoALdHUzHbmU6AGI_&Key-Pair-Id=K1TESTKEY"
        );
        assert_eq!(
            s.sign_canned("https://d111111abcdef8.cloudfront.net/image.jpg?size=large", EXP),
            "https://d111111abcdef8.cloudfront.net/image.jpg?size=large&Expires=1767290400&Signature=kx5dxV5cSW50EuCMtYi9JI0D5H97if~zNqwKxZtS7FPc3NV5oi~zCb45ti8ve-YDYw45hzN4lceF6zhW~STVWa7r7fC9wi5XBG1T6ZT2b9R0wMWmGxsy9uVGXFn6JqcjQMsq09MnWrPezK0qFQ2X6pV1nGQqLQZ2sgO~FSlEoCo_&Key-Pair-Id=K1TESTKEY"
        );
        let c3 = Custom {
            start: Some(1767200000),
            ..Default::default()
        };
        let p3 = custom_policy("https://d111111abcdef8.cloudfront.net/video.mp4", EXP, &c3);
        assert_eq!(cfb64(p3.as_bytes()), "eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly9kMTExMTExYWJjZGVmOC5jbG91ZGZyb250Lm5ldC92aWRlby5tcDQiLCJDb25kaXRpb24iOnsiRGF0ZUxlc3NUaGFuIjp7IkFXUzpFcG9jaFRpbWUiOjE3NjcyOTA0MDB9LCJEYXRlR3JlYXRlclRoYW4iOnsiQVdTOkVwb2NoVGltZSI6MTc2NzIwMDAwMH19fV19");
        assert_eq!(s.sign_policy(&p3), "aF0WSOV6dkNn-D0HJ~-EwLG69-4QZZ9dv1PgAZEsER~WXkaNa1pBM2aTVXrskBWVHUU6hc1nD6ZKYgBS5Sb9JluFVT0MbQWR~DrtUGu8ugCsnfzUe6ov38nFPBwQICY~jnoQZEXxO2ZkQrluOO4~jWOpqAGrCw5tkdHAnb9gHYQ_");
        let c4 = Custom {
            source_ip: Some("192.168.0.0/24".into()),
            ..Default::default()
        };
        assert_eq!(s.sign_policy(&custom_policy("https://d111111abcdef8.cloudfront.net/document.pdf", EXP, &c4)), "fq~vePR~kmc5kWDveZOJ3j6PSYRsHSSanN1shBBpj2rQwvVQPU8e9MRwUDizOYHLnuAXQG89Xm7kXL03HIX0uzELcY2Q6Bw68BcGQHq-nyC2U6h0Uv277pg~FIwatR84y1FZiswIVmZwfPmpkvR0X~1skuooCPGiztAXREe-hsg_");
        let p5 = custom_policy(
            "https://d111111abcdef8.cloudfront.net/images/*",
            EXP,
            &Custom::default(),
        );
        assert_eq!(s.sign_policy(&p5), "nP~GtuBVUSEUDMXW1ZTGTx~BUQfjl7FsWBQBKwnTNhHlBAeYlzdbMGMphViPQbjawdYt1Z~iBHDr0ctooQyhEdsXwZPQKmRJQm3yIxmbvnuCzB2qdMDVGRKH8l3PnfAJErrgUVIzb6m3KUdtIDvSkLV~Mb0tyQJwZ6QE4BdlEmQ_");
        let p9 = canned_policy(
            "https://example.com/file\",\"Resource\":\"*\",\"x\":\"",
            EXP,
        );
        assert_eq!(
            p9,
            r#"{"Statement":[{"Resource":"https://example.com/file\",\"Resource\":\"*\",\"x\":\"","Condition":{"DateLessThan":{"AWS:EpochTime":1767290400}}}]}"#
        );
        assert_eq!(s.sign_policy(&p9), "MNP0XV-bmzo5xrYyBU8m8mR3Yd0XdoB6UFAjxEt2R4VaNYtgvVYyIuI9hzD7KXX-GdBJUyqWG7wQIUJeBbEhPz7WzGKhlM1NqRW9EPGK-BwYjiLfDagfv-SHjOvIvNaWAhkaAkAlDJQ7qwzbogLAEsxboR9Ae47b6sSqBPxognM_");
        let s256 = sep(Hash::Sha256);
        let u = s256.sign_canned("https://d111111abcdef8.cloudfront.net/image.jpg", EXP);
        assert!(u.contains("Signature=LiC~LakvNvZtR~AsTcirQ0CAsy-YIZmpHmI9uImK4xJmrhVdJULhWmRt3bXO7qqw2gJDECZN-xC~bKWEKcJ9Vgs1IgpRdMkY6XGDKZ1XHBdNbd~0v5UiRf4zXwVMRqoynkQPQcihkze7RkDBsOoYHh9jDdtO1iDm0QZ1Qp~cxro_&"), "{u}");
        assert!(u.ends_with("&Key-Pair-Id=K1TESTKEY&Hash-Algorithm=SHA256"));
    }

    #[test]
    fn sep_cookie_vectors() {
        // spec: signed-urls §3.7 SEP-6 (canned cookies carry SEP-1's signature) and SEP-7
        // (custom cookies, wildcard resource, IP condition)
        let s = sep(Hash::Sha1);
        let sep1 = s.sign_policy(&canned_policy(
            "https://d111111abcdef8.cloudfront.net/image.jpg",
            EXP,
        ));
        assert!(s
            .sign_canned("https://d111111abcdef8.cloudfront.net/image.jpg", EXP)
            .contains(&format!("Signature={sep1}&")));
        let cookies = s.signed_cookies(
            "https://d111111abcdef8.cloudfront.net/*",
            EXP,
            &Custom {
                resource: None,
                start: None,
                source_ip: Some("10.0.0.0/8".into()),
            },
        );
        assert_eq!(
            cookies,
            vec![
                ("CloudFront-Policy", "eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly9kMTExMTExYWJjZGVmOC5jbG91ZGZyb250Lm5ldC8qIiwiQ29uZGl0aW9uIjp7IkRhdGVMZXNzVGhhbiI6eyJBV1M6RXBvY2hUaW1lIjoxNzY3MjkwNDAwfSwiSXBBZGRyZXNzIjp7IkFXUzpTb3VyY2VJcCI6IjEwLjAuMC4wLzgifX19XX0_".to_string()),
                ("CloudFront-Signature", "r28Jnd0t9aq7cu0k9jGWl4L0YsRxgueZtGRw5oEEspU9-eIPGM~ZGMQh36~5HpKC5c67cZjDgJcsqrCacmTHMZZx613gbeYAsx2-hEatU8URiuNHnVp4hPV3HqtbuZ6Din9iEZUpOBYVg6DWGEFJRCQ7SPouBhhJdYDZZOPHGpA_".to_string()),
                ("CloudFront-Key-Pair-Id", "K1TESTKEY".to_string()),
            ]
        );
        let with_sha256 = sep(Hash::Sha256).signed_cookies(
            "https://d111111abcdef8.cloudfront.net/*",
            EXP,
            &Custom::default(),
        );
        assert_eq!(
            with_sha256.last().unwrap(),
            &("CloudFront-Hash-Algorithm", "SHA256".to_string())
        );
    }

    #[test]
    fn cfk_vectors_with_2048_bit_key() {
        // spec: signed-urls §3.7 CFK-1, CFK-2 (botocore condition order)
        let s = CloudFrontSigner::from_pem(
            &pem("cfk-rsa-2048.pem"),
            "APKAEIBAERJR2EXAMPLE",
            Hash::Sha1,
            2048,
        )
        .unwrap();
        assert_eq!(
            s.sign_canned("https://d111111abcdef8.cloudfront.net/private-content/private.jpeg", 1577836800),
            "https://d111111abcdef8.cloudfront.net/private-content/private.jpeg?Expires=1577836800&Signature=NOai~fCNG523XBDM03BnCCZFJ0527Mdd31dfH5rqm1ewjuTt2uo8Eq9FCxFdKQhe2x-b2WXsaAuSa5lTQUtQrRAWmqTVxY-T9I8O0A26QI8agkU5TCA4EBwCaI6C8kvL5kpgQselQxP0j51842oCHXMCg2zSscihgPdi5Ml5QU0RTFPpSphxZRlLkhQSjcjAPSJwlvvuceogycsXHYMlqvfn1hv7DzPjF-53Xg1NSodBrs~IgG0zNsokIrv91xIdpNTOEIuovKLtsgPTE1UYMT880TqNrZFx56oPDmEwgBAf9jHJ2zyJvnj3f7XPsb46ofOp9eniUKAAh-zdOrCRbw__&Key-Pair-Id=APKAEIBAERJR2EXAMPLE"
        );
        let url = s.sign_custom(
            "https://d111111abcdef8.cloudfront.net/video/private/movie42/master.m3u8",
            1893456000,
            &Custom {
                resource: Some(
                    "https://d111111abcdef8.cloudfront.net/video/private/movie42/*".into(),
                ),
                start: Some(1893452400),
                source_ip: Some("203.0.113.0/24".into()),
            },
        );
        assert!(url.ends_with("&Signature=dCkIWq6GTBzZ~n7GsFchMFpVNAomlW1QbEP5DAaSpEcwrOd0hr1hJkF6A1PALoUfC1bmKzXJaK53LMND7UNq-eaWghicJPQ6uUra524-l7ufQ301aPoltivqggaUnZA4R6kMeu5tDiY3ypZvOcGnw5HXEZ3y5XEFYfL3mFaPlhoRScQBOnGI4mlTT1tDNTMYggg32BkJL8b3hWIaKv536zaHEQR8kCY~p3wnVVyZm3fY9-aXSLJwnvA8x8FkY3FmD~9WAGiXwwFlv7YW~wpWACHpoOn3ABs7VAsWN0tZw22VDUMSYGEgx4RevfLhwfTn8Ixwu5awZY9pLDXsQQYoHA__&Key-Pair-Id=APKAEIBAERJR2EXAMPLE"), "{url}");
        assert!(url.contains("?Policy=eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly9kMTExMTExYWJjZGVmOC5jbG91ZGZyb250Lm5ldC92aWRlby9wcml2YXRlL21vdmllNDIvKiIsIkNvbmRpdGlvbiI6eyJEYXRlTGVzc1RoYW4iOnsiQVdTOkVwb2NoVGltZSI6MTg5MzQ1NjAwMH0sIklwQWRkcmVzcyI6eyJBV1M6U291cmNlSXAiOiIyMDMuMC4xMTMuMC8yNCJ9LCJEYXRlR3JlYXRlclRoYW4iOnsiQVdTOkVwb2NoVGltZSI6MTg5MzQ1MjQwMH19fV19&"));
    }

    #[test]
    fn signature_verifies_with_the_public_key() {
        // What CloudFront does at the edge: check the signature against the trusted public key.
        use sha2::Digest;
        let s = CloudFrontSigner::from_pem(
            &pem("cfk-rsa-2048.pem"),
            "APKAEIBAERJR2EXAMPLE",
            Hash::Sha1,
            2048,
        )
        .unwrap();
        let policy = canned_policy("https://cdn.example/video/private/a.mp4", 1900000000);
        let sig_text = s.sign_policy(&policy);
        let std_b64: String = sig_text
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '=',
                '~' => '/',
                c => c,
            })
            .collect();
        let sig = STANDARD.decode(std_b64).unwrap();
        let public = s.public_key();
        let digest = sha1::Sha1::digest(policy.as_bytes());
        assert!(public
            .verify(Pkcs1v15Sign::new::<sha1::Sha1>(), &digest, &sig)
            .is_ok());
        let other = sha1::Sha1::digest(
            canned_policy("https://cdn.example/video/private/b.mp4", 1900000000).as_bytes(),
        );
        assert!(public
            .verify(Pkcs1v15Sign::new::<sha1::Sha1>(), &other, &sig)
            .is_err());
    }

    #[test]
    fn key_loading_errors() {
        assert!(CloudFrontSigner::from_pem("not a key", "K1", Hash::Sha1, 2048).is_err());
        let e = CloudFrontSigner::from_pem(&pem("sep-rsa-1024.pem"), "K1", Hash::Sha1, 2048)
            .unwrap_err();
        assert!(e.contains("1024"), "{e}");
        assert!(
            CloudFrontSigner::from_pem(&pem("sep-ecdsa-p256.pem"), "K1", Hash::Sha1, 1024).is_err(),
            "RSA only"
        );
    }
}
