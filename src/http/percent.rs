//! Percent-decoding (RFC 3986 §2.1), exactly once. `+` stays a literal plus: in paths and in
//! our token parameters it is not a space.

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes every `%XX` once; `None` when a `%` is not followed by two hex digits.
pub fn decode_once(raw: &str) -> Option<Vec<u8>> {
    let mut rest = raw.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    // The bytes between escapes are copied in runs, not one push each.
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        out.extend_from_slice(&rest[..at]);
        let h = hex_val(*rest.get(at + 1)?)?;
        let l = hex_val(*rest.get(at + 2)?)?;
        out.push(h << 4 | l);
        rest = &rest[at + 3..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once() {
        assert_eq!(decode_once("a%20b%2Fc").unwrap(), b"a b/c");
        assert_eq!(decode_once("%252e").unwrap(), b"%2e");
        assert_eq!(decode_once("a+b").unwrap(), b"a+b");
        for bad in ["%", "%4", "%zz", "a%g0"] {
            assert!(decode_once(bad).is_none(), "{bad}");
        }
    }
}
