//! Path globs for cache and access rules, compiled once to an anchored regex.
//!
//! Syntax (matched against the normalized asset path, `/`-separated, no leading `/`):
//! - `*` any run of characters within one segment; `?` one character within a segment
//! - `**` as a whole segment: any number of segments (`**/*.m3u8`, `live/**`, `**`)
//! - `[a-z0-9]`, `[!abc]` character classes (never match `/`)
//! - `{n}`, `{n,}`, `{n,m}` after a character, `?` or class: repetition, so content-addressed
//!   names can be written `v/*-[0-9a-f]{8}.*`
//! - `{mp4,webm}` alternatives of literal text
//!
//! Compiled with the `regex` crate, so matching is linear in the path length whatever the
//! pattern: a config cannot make requests slow.

use regex::Regex;

#[derive(Debug, Clone)]
pub struct Glob {
    source: String,
    /// The literal text every match starts with: a path without it is refused before the
    /// regex runs (an access rule such as `private/**` is checked on every request).
    prefix: String,
    re: Regex,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        if pattern.starts_with('/') {
            return Err("patterns are relative to the asset root: drop the leading `/`".into());
        }
        let re = format!("^{}$", translate(pattern)?);
        let re = Regex::new(&re).map_err(|e| format!("cannot compile pattern: {e}"))?;
        Ok(Glob {
            source: pattern.to_owned(),
            prefix: literal_prefix(pattern),
            re,
        })
    }

    pub fn is_match(&self, path: &str) -> bool {
        path.starts_with(&self.prefix) && self.re.is_match(path)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// The pattern's text before its first special character; without the last character when
/// that is `{`, which may repeat it any number of times, none included (`a{0,1}`).
fn literal_prefix(p: &str) -> String {
    let end = p.find(['*', '?', '[', '{', ']', '}']).unwrap_or(p.len());
    let mut prefix = p[..end].to_owned();
    if p[end..].starts_with('{') {
        prefix.pop();
    }
    prefix
}

fn translate(p: &str) -> Result<String, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    // Whether the last emitted item can take a `{n,m}` quantifier.
    let mut quantifiable = false;
    while i < chars.len() {
        let c = chars[i];
        let at_seg_start = i == 0 || chars[i - 1] == '/';
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                let seg_end = matches!(chars.get(i + 2), None | Some('/'));
                if !at_seg_start || !seg_end {
                    return Err("`**` must be a whole path segment (like `a/**/b`)".into());
                }
                if chars.get(i + 2) == Some(&'/') {
                    out.push_str("(?:[^/]*/)*"); // zero or more whole segments
                    i += 3;
                } else if i == 0 {
                    out.push_str(".*");
                    i += 2;
                } else {
                    // `a/**`: `a/` already emitted; anything (including more segments) below it.
                    out.push_str(".*");
                    i += 2;
                }
                quantifiable = false;
                continue;
            }
            '*' => {
                out.push_str("[^/]*");
                quantifiable = false;
            }
            '?' => {
                out.push_str("[^/]");
                quantifiable = true;
            }
            '[' => {
                let (class, next) = class(&chars, i)?;
                out.push_str(&class);
                i = next;
                quantifiable = true;
                continue;
            }
            '{' => {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|o| i + o)
                    .ok_or("unclosed `{`")?;
                let inner: String = chars[i + 1..close].iter().collect();
                if inner.chars().all(|c| c.is_ascii_digit() || c == ',') && !inner.is_empty() {
                    if !quantifiable {
                        return Err(format!(
                            "`{{{inner}}}` repeats nothing: put it after a character, `?` or `[class]`"
                        ));
                    }
                    let valid = match inner.split_once(',') {
                        None => inner.parse::<u16>().is_ok(),
                        Some((a, "")) => a.parse::<u16>().is_ok(),
                        Some((a, b)) => matches!(
                            (a.parse::<u16>(), b.parse::<u16>()),
                            (Ok(a), Ok(b)) if a <= b
                        ),
                    };
                    if !valid {
                        return Err(format!("bad repetition `{{{inner}}}`"));
                    }
                    out.push_str(&format!("{{{inner}}}"));
                    quantifiable = false;
                } else {
                    if inner.contains(['{', '[', '*', '?', '/']) {
                        return Err(format!(
                            "alternatives `{{{inner}}}` may hold only literal text"
                        ));
                    }
                    let alts: Vec<String> = inner.split(',').map(regex::escape).collect();
                    out.push_str(&format!("(?:{})", alts.join("|")));
                    quantifiable = false;
                }
                i = close + 1;
                continue;
            }
            ']' | '}' => return Err(format!("unmatched `{c}`")),
            c => {
                out.push_str(&regex::escape(&c.to_string()));
                quantifiable = c != '/';
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Translates a `[...]` class starting at `chars[start]`; returns it and the index after `]`.
fn class(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut i = start + 1;
    let mut out = String::from("[");
    if matches!(chars.get(i), Some('!') | Some('^')) {
        out.push('^');
        i += 1;
    }
    let mut items = 0;
    loop {
        let c = *chars.get(i).ok_or("unclosed `[`")?;
        if c == ']' && items > 0 {
            break;
        }
        if c == '/' {
            return Err("`/` cannot appear in a `[class]`".into());
        }
        out.push_str(&regex::escape(&c.to_string()));
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            if end < c {
                return Err(format!("reversed range `{c}-{end}`"));
            }
            out.push('-');
            out.push_str(&regex::escape(&end.to_string()));
            i += 3;
        } else {
            i += 1;
        }
        items += 1;
    }
    // A negated class must not match `/` either: globs never cross segments except via `**`.
    if out.starts_with("[^") {
        out.push('/');
    }
    out.push(']');
    Ok((out, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Glob::new(p).unwrap().is_match(path)
    }

    /// The literal prefix only refuses early: a character before `{` may occur zero times.
    #[test]
    fn the_literal_prefix_never_refuses_a_match() {
        assert_eq!(literal_prefix("private/**"), "private/");
        assert_eq!(literal_prefix("ab{0,1}c"), "a");
        assert_eq!(literal_prefix("*.mp4"), "");
        assert!(m("ab{0,1}c", "ac"));
        assert!(m("a{0}b", "b"));
        assert!(m("x{mp4,webm}", "xwebm"));
        assert!(!m("private/**", "small.mp4"));
    }

    proptest::proptest! {
        #[test]
        fn the_prefix_check_agrees_with_the_regex(
            p in "[ab/]{0,4}[*?]?[ab]{0,2}(\\{0,1\\})?[ab/.]{0,3}",
            path in "[ab/.]{0,8}",
        ) {
            if let Ok(g) = Glob::new(&p) {
                proptest::prop_assert_eq!(g.is_match(&path), g.re.is_match(&path));
            }
        }
    }

    #[test]
    fn double_star() {
        assert!(m("**/*.m3u8", "a.m3u8"));
        assert!(m("**/*.m3u8", "x/y/a.m3u8"));
        assert!(!m("**/*.m3u8", "a.m3u8x"));
        assert!(m("live/**", "live/a/b.ts"));
        assert!(m("live/**", "live/x"));
        assert!(!m("live/**", "livex/a"));
        assert!(!m("live/**", "a/live/b"));
        assert!(m("**", "anything/at/all.mp4"));
        assert!(m("a/**/b.mp4", "a/b.mp4"));
        assert!(m("a/**/b.mp4", "a/x/y/b.mp4"));
        assert!(!m("a/**/b.mp4", "ab.mp4"));
    }

    #[test]
    fn single_star_stays_in_segment() {
        assert!(m("*.mp4", "a.mp4"));
        assert!(!m("*.mp4", "dir/a.mp4"));
        assert!(m("private/*", "private/a.mp4"));
        assert!(!m("private/*", "private/a/b.mp4"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
    }

    #[test]
    fn classes_and_repetition() {
        let p = "v/*-[0-9a-f]{8}.*";
        assert!(m(p, "v/intro-deadbeef.mp4"));
        assert!(m(p, "v/a-b-0123abcd.m4s"));
        assert!(!m(p, "v/intro-deadbee.mp4"), "7 hex chars");
        assert!(!m(p, "v/intro-deadbeeg.mp4"));
        assert!(!m(p, "v/x/intro-deadbeef.mp4"));
        assert!(m("*.[0-9a-f]{16,64}.*", "seg.0123456789abcdef.m4s"));
        assert!(!m("*.[0-9a-f]{16,64}.*", "seg.20241231.m4s"));
        assert!(m("[!.]*", "a"));
        assert!(!m("x[!a]y", "x/y"), "negated classes never match /");
        assert!(m("*.{mp4,webm}", "a.webm"));
        assert!(!m("*.{mp4,webm}", "a.ts"));
        assert!(
            m("a+b(c).mp4", "a+b(c).mp4"),
            "regex metacharacters are literal"
        );
        assert!(!m("a.mp4", "aXmp4"));
    }

    #[test]
    fn invalid_patterns_explain_themselves() {
        for (p, why) in [
            ("", "empty"),
            ("/abs/*", "leading"),
            ("a**", "whole path segment"),
            ("**b/c", "whole path segment"),
            ("[abc", "unclosed"),
            ("a{2", "unclosed"),
            ("*{8}", "repeats nothing"),
            ("a{3,1}", "bad repetition"),
            ("{a,*}", "literal"),
            ("[z-a]", "reversed"),
            ("a]", "unmatched"),
            ("[a/b]", "`/`"),
        ] {
            let err = Glob::new(p).unwrap_err();
            assert!(err.contains(why), "{p:?}: {err}");
        }
    }
}
