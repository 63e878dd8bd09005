//! Entity tags (RFC 9110 §8.8.3): parsing, the two comparison functions, and our strong tag
//! built from a content digest.
//!
//! Our ETags are always strong and derived from the bytes alone (spec http-origin C-3), so every
//! replica holding the same file emits the same tag. Weak tags from clients (e.g. after a CDN
//! compressed a manifest, F-9) still match in If-None-Match, which uses weak comparison, and
//! never in If-Match / If-Range, which use strong comparison.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A parsed entity-tag. `tag` excludes the quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    pub tag: String,
}

impl EntityTag {
    /// The strong tag for a SHA-256 digest: 43 chars of unpadded base64url (C-1: no DQUOTE,
    /// no backslash, no space).
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        EntityTag {
            weak: false,
            tag: URL_SAFE_NO_PAD.encode(digest),
        }
    }

    /// Strong comparison (C-2): both strong and byte-equal.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.tag == other.tag
    }

    /// Weak comparison (C-2): byte-equal opaque tags, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.tag == other.tag
    }

    /// Parses exactly one entity-tag; surrounding OWS allowed.
    pub fn parse(value: &str) -> Option<EntityTag> {
        let (tag, rest) = scan_etag(value.trim_matches([' ', '\t']))?;
        rest.is_empty().then_some(tag)
    }
}

impl std::fmt::Display for EntityTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.weak {
            write!(f, "W/\"{}\"", self.tag)
        } else {
            write!(f, "\"{}\"", self.tag)
        }
    }
}

fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// Scans one entity-tag at the start of `s`; returns it and the unread rest (Go's `scanETag`).
fn scan_etag(s: &str) -> Option<(EntityTag, &str)> {
    let (weak, tag, rest) = scan_tag(s)?;
    Some((
        EntityTag {
            weak,
            tag: tag.to_string(),
        },
        rest,
    ))
}

/// [`scan_etag`] without the copy: weakness, the opaque tag (without quotes), the rest.
fn scan_tag(s: &str) -> Option<(bool, &str, &str)> {
    let (weak, body) = match s.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let body = body.strip_prefix('"')?;
    let end = body.bytes().position(|b| !is_etagc(b))?;
    if body.as_bytes()[end] != b'"' {
        return None;
    }
    Some((weak, &body[..end], &body[end + 1..]))
}

/// One member of an If-Match / If-None-Match list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member<'a> {
    Any,
    Tag { weak: bool, tag: &'a str },
}

/// The members of a (possibly comma-joined) list, borrowed: what [`TagList::parse`] keeps and
/// [`list_matches`] compares, read the same way by both.
fn members(value: &str) -> impl Iterator<Item = Member<'_>> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let r = rest.take()?.trim_start_matches([' ', '\t', ',']);
        if r.is_empty() {
            return None;
        }
        if let Some(after) = r.strip_prefix('*') {
            let after = after.trim_start_matches([' ', '\t']);
            // A `*` element makes the list match anything; a malformed one ends it.
            return (after.is_empty() || after.starts_with(',')).then_some(Member::Any);
        }
        let (weak, tag, after) = scan_tag(r)?;
        let after = after.trim_start_matches([' ', '\t']);
        // A member followed by garbage still counts; nothing after it does.
        if after.is_empty() || after.starts_with(',') {
            rest = Some(after);
        }
        Some(Member::Tag { weak, tag })
    })
}

/// Whether the list `value` matches `current`, as `TagList::parse(value)` then
/// `matches_strong` (If-Match) or `matches_weak` (If-None-Match) would say, without building
/// the list (this runs on every revalidation).
pub fn list_matches(value: &str, current: Option<&EntityTag>, strong: bool) -> bool {
    // Nearly every revalidation sends back exactly the tag it was given: compared whole, it
    // needs no scan (the answer is the one the scan would give, as the tag is all etagc).
    if let Some(c) = current {
        if !c.weak
            && value.len() == c.tag.len() + 2
            && value.starts_with('"')
            && value.ends_with('"')
            && value[1..value.len() - 1] == c.tag
            // Folded without an early exit, so the check runs over whole vectors.
            && c.tag.bytes().fold(true, |ok, b| ok & is_etagc(b))
        {
            return true;
        }
    }
    members(value).any(|m| match (m, current) {
        (Member::Any, _) => true,
        (Member::Tag { .. }, None) => false,
        (Member::Tag { weak, tag }, Some(c)) if strong => !weak && !c.weak && tag == c.tag,
        (Member::Tag { tag, .. }, Some(c)) => tag == c.tag,
    })
}

/// The value of If-Match / If-None-Match: `*` or a list of entity-tags (RFC 9110 §13.1.1-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    Any,
    Tags(Vec<EntityTag>),
}

impl TagList {
    /// Parses a (possibly comma-joined) field value. A malformed list yields the tags read
    /// before the error (Go does the same), so `,` alone is an empty list that matches nothing.
    /// A `*` element makes the list match anything (C-11, as Go does).
    pub fn parse(value: &str) -> TagList {
        let mut tags = Vec::new();
        for m in members(value) {
            match m {
                Member::Any => return TagList::Any,
                Member::Tag { weak, tag } => tags.push(EntityTag {
                    weak,
                    tag: tag.to_string(),
                }),
            }
        }
        TagList::Tags(tags)
    }

    /// If-Match semantics: `*` or any member strongly equal to `current`.
    pub fn matches_strong(&self, current: Option<&EntityTag>) -> bool {
        match (self, current) {
            (TagList::Any, _) => true,
            (TagList::Tags(tags), Some(c)) => tags.iter().any(|t| t.strong_eq(c)),
            (TagList::Tags(_), None) => false,
        }
    }

    /// If-None-Match semantics: `*` or any member weakly equal to `current`.
    pub fn matches_weak(&self, current: Option<&EntityTag>) -> bool {
        match (self, current) {
            (TagList::Any, _) => true,
            (TagList::Tags(tags), Some(c)) => tags.iter().any(|t| t.weak_eq(c)),
            (TagList::Tags(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> EntityTag {
        EntityTag::parse(s).unwrap()
    }

    #[test]
    fn list_matches_says_what_the_parsed_list_says() {
        // The allocation-free comparison must agree with TagList on every kind of list,
        // well-formed or not (spec http-origin C-11, §5.5 O8/O9).
        let lists = [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\"",
            "\"x\",W/\"abc\"",
            "*",
            " * ",
            "*, \"x\"",
            "\"x\", *",
            "*x",
            ",",
            "",
            " , ,",
            "\"abc",
            "abc",
            "\"x\" junk, \"abc\"",
            "\"abc\" junk",
            "W/\"x\"\t,\t\"abc\"",
            "\"ABC\"",
            "W/abc",
            "\"a\"\"abc\"",
            "\"x\", , \"abc\"",
            "\"\"",
            "\"é\", \"abc\"",
            "\"a\"b\"",
            "\"a b\"",
        ];
        // The last two are not valid tags, but a caller may build any EntityTag: a list that
        // is the tag in quotes must still be read as the scan reads it.
        let odd = |tag: &str| EntityTag {
            weak: false,
            tag: tag.into(),
        };
        let tags = [
            t("\"abc\""),
            t("W/\"abc\""),
            t("\"\""),
            odd("a\"b"),
            odd("a b"),
        ];
        for list in lists {
            let parsed = TagList::parse(list);
            for current in tags.iter().map(Some).chain([None]) {
                assert_eq!(
                    list_matches(list, current, true),
                    parsed.matches_strong(current),
                    "strong {list:?} {current:?}"
                );
                assert_eq!(
                    list_matches(list, current, false),
                    parsed.matches_weak(current),
                    "weak {list:?} {current:?}"
                );
            }
        }
    }

    #[test]
    fn comparison_table() {
        // spec: http-origin C-2 (RFC 9110 §8.8.3.2 table)
        assert!(!t("W/\"1\"").strong_eq(&t("W/\"1\"")));
        assert!(t("W/\"1\"").weak_eq(&t("W/\"1\"")));
        assert!(!t("W/\"1\"").strong_eq(&t("W/\"2\"")));
        assert!(!t("W/\"1\"").weak_eq(&t("W/\"2\"")));
        assert!(!t("W/\"1\"").strong_eq(&t("\"1\"")));
        assert!(t("W/\"1\"").weak_eq(&t("\"1\"")));
        assert!(t("\"1\"").strong_eq(&t("\"1\"")));
        assert!(t("\"1\"").weak_eq(&t("\"1\"")));
        assert!(!t("\"Foo\"").weak_eq(&t("\"foo\"")));
    }

    #[test]
    fn scan_etag_cases() {
        // spec: http-origin §5.5 O8/O9 (Go TestScanETag)
        assert_eq!(scan_etag("W/\"etag-1\""), Some((t("W/\"etag-1\""), "")));
        assert_eq!(scan_etag("\"etag-2\"").unwrap().0.tag, "etag-2");
        let (first, rest) = scan_etag("\"etag-1\", \"etag-2\"").unwrap();
        assert_eq!(first.tag, "etag-1");
        assert_eq!(rest, ", \"etag-2\"");
        for bad in [
            "",
            "W/",
            "W/\"truc",
            "w/\"case-sensitive\"",
            "\"spaced etag\"",
        ] {
            assert!(EntityTag::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn list_parsing() {
        let cur = t("\"A\"");
        assert!(TagList::parse("\"Z\", \"A\"").matches_strong(Some(&cur)));
        assert!(TagList::parse("*").matches_strong(Some(&cur)));
        assert!(!TagList::parse("\"B\"").matches_strong(Some(&cur)));
        assert!(!TagList::parse("W/\"A\"").matches_strong(Some(&cur)));
        assert!(TagList::parse("W/\"A\"").matches_weak(Some(&cur)));
        assert!(TagList::parse("\"baz\", W/\"A\"").matches_weak(Some(&cur)));
        // Malformed list (`,`) matches nothing (Go: If-None-Match `,` → 200).
        assert_eq!(TagList::parse(","), TagList::Tags(vec![]));
        assert!(!TagList::parse(",").matches_weak(Some(&cur)));
        // Not hashed yet: no tag matches, `*` still does (the file exists).
        assert!(!TagList::parse("\"A\"").matches_strong(None));
        assert!(TagList::parse("*").matches_strong(None));
        assert!(!TagList::parse("W/\"A\"").matches_weak(None));
        // Commas inside quotes belong to the tag.
        assert_eq!(
            TagList::parse("\"a,b\", \"c\""),
            TagList::Tags(vec![t("\"a,b\""), t("\"c\"")])
        );
        // Garbage after a tag stops the scan but keeps what was read.
        assert_eq!(
            TagList::parse("\"A\" junk, \"B\""),
            TagList::Tags(vec![t("\"A\"")])
        );
    }

    #[test]
    fn digest_tag_is_strong_and_safe() {
        let tag = EntityTag::from_digest(&[0xff; 32]);
        assert!(!tag.weak);
        assert_eq!(tag.tag.len(), 43);
        assert!(tag.tag.bytes().all(is_etagc));
        assert_eq!(EntityTag::parse(&tag.to_string()), Some(tag));
    }
}
