//! `KeyRing`: HMAC keys by key id, one of them the signing key; the others still verify, so
//! keys rotate without breaking links already handed out.

use base64::Engine;

/// Decodes a configured secret: `hex:<even-length hex>` or `base64:<standard or url-safe>`.
/// Errors never include the secret itself.
pub fn decode_secret(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("hex:") {
        return hex::decode(h)
            .map_err(|_| "hex: secret must be an even number of hex digits".into());
    }
    if let Some(b) = s.strip_prefix("base64:") {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        let no_pad_std = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        return STANDARD
            .decode(b)
            .or_else(|_| URL_SAFE.decode(b))
            .or_else(|_| URL_SAFE_NO_PAD.decode(b))
            .or_else(|_| no_pad_std.decode(b))
            .map_err(|_| "base64: secret is not valid base64".into());
    }
    Err("secret must start with `hex:` or `base64:`".into())
}

/// Key ids: `[A-Za-z0-9_-]{1,32}` (spec signed-urls §8.1).
pub fn valid_kid(kid: &str) -> bool {
    (1..=32).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub const MIN_KEY_BYTES: usize = 32;

#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Vec<(String, Vec<u8>)>,
    signing: Option<String>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("key_ids", &ids)
            .field("signing", &self.signing)
            .finish()
    }
}

impl KeyRing {
    /// Validates ids, lengths and that the signing key exists. Errors name the key id only.
    pub fn new(keys: Vec<(String, Vec<u8>)>, signing: Option<String>) -> Result<KeyRing, String> {
        for (kid, key) in &keys {
            if !valid_kid(kid) {
                return Err(format!("key id `{kid}` must be 1-32 of A-Z a-z 0-9 _ -"));
            }
            if key.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "key `{kid}` is {} bytes; at least {MIN_KEY_BYTES} random bytes are required",
                    key.len()
                ));
            }
        }
        if let Some(s) = &signing {
            if !keys.iter().any(|(k, _)| k == s) {
                return Err(format!(
                    "signing key `{s}` is not among the configured keys"
                ));
            }
        }
        Ok(KeyRing { keys, signing })
    }

    pub fn get(&self, kid: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, v)| v.as_slice())
    }

    /// The key used to mint new links.
    pub fn signing(&self) -> Option<(&str, &[u8])> {
        let kid = self.signing.as_deref()?;
        self.get(kid).map(|k| (kid, k))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_decode() {
        let k1 =
            decode_secret("hex:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
                .unwrap();
        assert_eq!(k1, (0u8..32).collect::<Vec<_>>());
        // spec: signed-urls §8.7 gives K1 in base64 too.
        assert_eq!(
            decode_secret("base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap(),
            k1
        );
        assert_eq!(
            decode_secret("base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap(),
            k1
        );
        for bad in ["000102", "hex:0g", "hex:abc", "base64:***"] {
            let e = decode_secret(bad).unwrap_err();
            assert!(
                !e.contains("0g") && !e.contains("***"),
                "errors never echo secrets: {e}"
            );
        }
    }

    #[test]
    fn ring_rules() {
        let key = vec![7u8; 32];
        let ring = KeyRing::new(
            vec![("k1".into(), key.clone()), ("k0".into(), key.clone())],
            Some("k1".into()),
        )
        .unwrap();
        assert_eq!(ring.signing().unwrap().0, "k1");
        assert!(ring.get("k0").is_some(), "old keys still verify");
        assert!(KeyRing::new(vec![("k1".into(), vec![1; 31])], None)
            .unwrap_err()
            .contains("32"));
        assert!(KeyRing::new(vec![("bad id".into(), key.clone())], None).is_err());
        assert!(KeyRing::new(vec![("k1".into(), key)], Some("k2".into())).is_err());
        assert!(
            !format!("{ring:?}").contains("7, 7"),
            "Debug never prints key bytes"
        );
    }
}
