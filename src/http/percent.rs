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
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = hex_val(*b.get(i + 1)?)?;
            let l = hex_val(*b.get(i + 2)?)?;
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
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
