//! Conditional requests, evaluated in the order of RFC 9110 §13.2.2 (spec http-origin §2.3).
//!
//! Pure: the caller passes the request's precondition fields, the current validators and
//! `now`. The result is a [`Precondition`] outcome; building the response happens elsewhere.
//! Step 0 of §2.3 (auth, path, method) is the caller's job and must run first: preconditions
//! are only consulted for a resource that exists and may be served.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::etag::{list_matches, EntityTag};

/// The precondition header fields of one request, as received (each may have several lines).
#[derive(Debug, Default, Clone)]
pub struct ConditionalHeaders<'a> {
    pub if_match: Lines<'a>,
    pub if_none_match: Lines<'a>,
    pub if_modified_since: Lines<'a>,
    pub if_unmodified_since: Lines<'a>,
    pub if_range: Lines<'a>,
}

/// The lines of one field as received, usually borrowed from the request. Nearly every
/// request has at most one line per field, which is kept without an allocation.
#[derive(Debug, Default, Clone)]
pub struct Lines<'a> {
    first: Option<Cow<'a, str>>,
    more: Vec<Cow<'a, str>>,
}

impl<'a> Lines<'a> {
    pub fn push(&mut self, line: impl Into<Cow<'a, str>>) {
        if self.first.is_none() {
            self.first = Some(line.into());
        } else {
            self.more.push(line.into());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The only line; `None` when there is none or more than one.
    pub fn single(&self) -> Option<&str> {
        self.first.as_deref().filter(|_| self.more.is_empty())
    }

    /// Several lines are one comma-separated list (RFC 9110 §5.3); one line is used as it is.
    pub fn joined(&self) -> Cow<'_, str> {
        match (&self.first, self.single()) {
            (_, Some(one)) => one.into(),
            (None, None) => "".into(),
            (Some(first), None) => {
                let mut all = first.to_string();
                for line in &self.more {
                    all.push_str(", ");
                    all.push_str(line);
                }
                all.into()
            }
        }
    }
}

impl<'a, S: Into<Cow<'a, str>>> FromIterator<S> for Lines<'a> {
    fn from_iter<I: IntoIterator<Item = S>>(lines: I) -> Self {
        let mut all = Lines::default();
        for line in lines {
            all.push(line);
        }
        all
    }
}

/// The current validators of the selected representation.
#[derive(Debug, Clone)]
pub struct Validators<'a> {
    /// The strong content ETag, `None` while the digest is not known yet.
    pub etag: Option<&'a EntityTag>,
    /// Last-Modified as sent (whole seconds, never later than `now`; C-4).
    pub last_modified: SystemTime,
}

/// What the preconditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
    /// Serve normally; `use_range` is false when If-Range failed (§13.1.5: ignore Range).
    Passed { use_range: bool },
}

/// Truncates to whole seconds since the epoch (HTTP-date resolution, C-4).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Last-Modified to send: the mtime at second resolution, clamped to `now` (C-4, CT-19).
pub fn effective_last_modified(mtime: SystemTime, now: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs(mtime).min(unix_secs(now)))
}

/// A single HTTP-date; a list or an invalid date is `None` (C-6, C-9, C-10).
fn single_date(lines: &Lines<'_>) -> Option<SystemTime> {
    // A comma-joined list is not a valid HTTP-date, so it fails to parse and is ignored.
    httpdate::parse_http_date(lines.single()?.trim()).ok()
}

/// Evaluates preconditions for a GET (`is_get`) or HEAD; `has_range` says whether the request
/// carries a Range that would otherwise be processed.
pub fn evaluate(
    h: &ConditionalHeaders,
    v: &Validators<'_>,
    now: SystemTime,
    is_get: bool,
    has_range: bool,
) -> Precondition {
    let lm = unix_secs(v.last_modified);
    // Steps 1–2: If-Match, else If-Unmodified-Since.
    if !h.if_match.is_empty() {
        if !list_matches(&h.if_match.joined(), v.etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(date) = single_date(&h.if_unmodified_since) {
        if lm > unix_secs(date) {
            return Precondition::Failed;
        }
    }
    // Steps 3–4: If-None-Match, else If-Modified-Since (GET/HEAD only, which is all we serve).
    if !h.if_none_match.is_empty() {
        if list_matches(&h.if_none_match.joined(), v.etag, false) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = single_date(&h.if_modified_since) {
        if lm <= unix_secs(date) {
            return Precondition::NotModified;
        }
    }
    // Step 5: If-Range only matters for a GET with a Range (C-14).
    let use_range = if is_get && has_range && !h.if_range.is_empty() {
        if_range_passes(&h.if_range, v, now)
    } else {
        true
    };
    Precondition::Passed { use_range }
}

/// If-Range (§13.1.5; C-15..C-18): strong ETag match, or an exact Last-Modified date that is
/// itself a strong validator (at least one second older than `now`).
fn if_range_passes(values: &Lines<'_>, v: &Validators<'_>, now: SystemTime) -> bool {
    let Some(value) = values.single() else {
        return false;
    };
    let value = value.trim();
    // C-15: an entity-tag has a DQUOTE within its first three characters.
    if value.bytes().take(3).any(|b| b == b'"') {
        return EntityTag::parse(value)
            .zip(v.etag)
            .is_some_and(|(tag, current)| tag.strong_eq(current));
    }
    let Ok(date) = httpdate::parse_http_date(value) else {
        return false;
    };
    let lm = unix_secs(v.last_modified);
    let date_is_strong = unix_secs(now) > lm;
    date_is_strong && unix_secs(date) == lm
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_403_716_338; // Wed, 25 Jun 2014 17:12:18 GMT (Go's range_with_modtime)

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn tag() -> EntityTag {
        EntityTag::parse("\"abc\"").unwrap()
    }

    fn eval_with(h: ConditionalHeaders<'_>, has_range: bool) -> Precondition {
        let etag = tag();
        let v = Validators {
            etag: Some(&etag),
            last_modified: at(T),
        };
        evaluate(&h, &v, at(T + 3600), true, has_range)
    }

    fn hdr<'a>(f: impl FnOnce(&mut ConditionalHeaders<'a>)) -> ConditionalHeaders<'a> {
        let mut h = ConditionalHeaders::default();
        f(&mut h);
        h
    }

    use Precondition::*;
    const PASS: Precondition = Passed { use_range: true };
    const NO_RANGE: Precondition = Passed { use_range: false };

    #[test]
    fn if_none_match() {
        // spec: http-origin CT-1..CT-5
        let s = |v: &str| eval_with(hdr(|h| h.if_none_match = Lines::from_iter([v])), false);
        assert_eq!(s("\"abc\""), NotModified); // CT-1
        assert_eq!(s("W/\"abc\""), NotModified); // CT-2
        assert_eq!(s("\"x\", \"abc\""), NotModified); // CT-3
        assert_eq!(s("*"), NotModified); // CT-4
        assert_eq!(s("\"ABC\""), PASS); // case-sensitive (S7)
        assert_eq!(s(","), PASS); // S8
        let both = hdr(|h| {
            h.if_none_match = Lines::from_iter(["\"x\""]);
            h.if_modified_since = Lines::from_iter([date(T)]);
        });
        assert_eq!(eval_with(both, false), PASS); // CT-5: IMS ignored when INM present
                                                  // Two header lines are one list.
        let lines = hdr(|h| h.if_none_match = Lines::from_iter(["\"x\"", "\"abc\""]));
        assert_eq!(eval_with(lines, false), NotModified);
    }

    #[test]
    fn if_modified_since() {
        // spec: http-origin CT-6..CT-8
        let s = |vals: Vec<String>| {
            eval_with(
                hdr(|h| h.if_modified_since = vals.into_iter().collect()),
                false,
            )
        };
        assert_eq!(s(vec![date(T)]), NotModified);
        assert_eq!(s(vec![date(T + 1)]), NotModified);
        assert_eq!(s(vec![date(T - 1)]), PASS);
        assert_eq!(s(vec!["garbage".into()]), PASS);
        assert_eq!(s(vec![date(T), date(T)]), PASS);
        assert_eq!(s(vec![format!("{}, {}", date(T), date(T))]), PASS);
        // C-6: RFC 850 and asctime forms are accepted.
        assert_eq!(
            s(vec!["Wednesday, 25-Jun-14 17:12:18 GMT".into()]),
            NotModified
        );
        assert_eq!(s(vec!["Wed Jun 25 17:12:18 2014".into()]), NotModified);
    }

    #[test]
    fn if_match_and_unmodified_since() {
        // spec: http-origin CT-9..CT-13, §5.3 S18–S23
        let m = |v: &str| eval_with(hdr(|h| h.if_match = Lines::from_iter([v])), false);
        assert_eq!(m("\"abc\""), PASS);
        assert_eq!(m("*"), PASS);
        assert_eq!(m("\"x\", \"abc\""), PASS);
        assert_eq!(m("\"x\""), Failed);
        assert_eq!(m("W/\"abc\""), Failed); // S21: weak never matches strongly
        assert_eq!(m("garbage"), Failed);
        let im_ius = hdr(|h| {
            h.if_match = Lines::from_iter(["\"abc\""]);
            h.if_unmodified_since = Lines::from_iter([date(T - 10)]);
        });
        assert_eq!(eval_with(im_ius, false), PASS); // CT-11
        let ius = |d| {
            eval_with(
                hdr(|h| h.if_unmodified_since = Lines::from_iter([d])),
                false,
            )
        };
        assert_eq!(ius(date(T)), PASS); // CT-12
        assert_eq!(ius(date(T - 2)), Failed);
        assert_eq!(ius("nonsense".into()), PASS); // invalid date → ignored
        let order = hdr(|h| {
            h.if_match = Lines::from_iter(["\"x\""]);
            h.if_none_match = Lines::from_iter(["\"abc\""]);
        });
        assert_eq!(eval_with(order, false), Failed); // CT-13
    }

    #[test]
    fn if_range() {
        // spec: http-origin CT-14..CT-17, §5.3 S10–S16
        let r = |v: &str| eval_with(hdr(|h| h.if_range = Lines::from_iter([v])), true);
        assert_eq!(r("\"abc\""), PASS); // CT-14
        assert_eq!(r("W/\"abc\""), NO_RANGE); // CT-15
        assert_eq!(r("\"x\""), NO_RANGE);
        assert_eq!(r("garbage"), NO_RANGE);
        assert_eq!(r(&date(T)), PASS); // CT-16
        assert_eq!(r(&date(T + 1)), NO_RANGE);
        assert_eq!(r(&date(T - 1)), NO_RANGE);
        // CT-17: without a Range, If-Range is ignored.
        assert_eq!(
            eval_with(hdr(|h| h.if_range = Lines::from_iter(["\"x\""])), false),
            PASS
        );
        // C-17: a date equal to an mtime within the current second is weak → full.
        let etag = tag();
        let v = Validators {
            etag: Some(&etag),
            last_modified: at(T),
        };
        let h = hdr(|h| h.if_range = Lines::from_iter([date(T)]));
        assert_eq!(evaluate(&h, &v, at(T), true, true), NO_RANGE);
        // HEAD ignores Range and so If-Range.
        assert_eq!(evaluate(&h, &v, at(T), false, true), PASS);
    }

    #[test]
    fn sub_second_mtime_truncates() {
        // spec: http-origin §5.3 S16 (range_with_modtime_nanos)
        let mtime = at(T) + Duration::from_nanos(123);
        let lm = effective_last_modified(mtime, at(T + 100));
        assert_eq!(httpdate::fmt_http_date(lm), "Wed, 25 Jun 2014 17:12:18 GMT");
    }

    #[test]
    fn future_mtime_is_clamped_to_now() {
        // spec: http-origin C-4, CT-19
        let now = at(T);
        assert_eq!(effective_last_modified(at(T + 999), now), now);
    }
}
