//! `Range` header → [`RangePlan`] (RFC 9110 §14).
//!
//! Two pure steps, kept apart so each can be tested against the peers' tables
//! (spec http-origin §5.6 tests the parser alone, then the planner):
//!
//! 1. [`parse_range`] turns header bytes into [`RangeSpec`]s or says why the header is ignored.
//!    Parse work is bounded: it stops once more than `max_ranges` specs are seen.
//! 2. [`plan_ranges`] resolves specs against the representation length: drops unsatisfiable
//!    specs, clamps, refuses amplification (sum > length → full 200), coalesces, and says
//!    whether the answer is a full 200, a single 206, a multipart 206 or a 416.
//!
//! Never panics and never overflows: numbers saturate at `u64::MAX`.

/// One inclusive byte range `start..=end`, always within the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes; never zero, since `end` is inclusive.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// `bytes F-L/N`, the value of a `Content-Range` header.
    pub fn content_range(&self, complete: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, complete)
    }
}

/// A syntactically valid range-spec, before it meets the file length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-` or `first-last`
    FromTo { first: u64, last: Option<u64> },
    /// `-suffix`
    Suffix(u64),
}

/// Why a `Range` header is ignored (answered as if absent: 200 full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeIgnored {
    /// Unit other than `bytes`.
    UnknownUnit,
    /// Syntax error anywhere in the set, or no range-spec at all.
    Invalid,
    /// More than `max_ranges` specs.
    TooMany,
}

/// What to send, decided from the specs and the representation length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangePlan {
    /// Ignore the Range: 200 with the whole representation.
    Full,
    /// 206 with one part.
    Single(ByteRange),
    /// 206 `multipart/byteranges`, parts in request order (merged parts take the earliest place).
    Multi(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ows(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ows(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// `1*DIGIT`, saturating at `u64::MAX`. `None` when empty or not all digits.
fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn parse_spec(elem: &[u8]) -> Option<RangeSpec> {
    // `elem` is already trimmed of OWS and non-empty.
    if let Some(rest) = elem.strip_prefix(b"-") {
        return parse_digits(trim_ows(rest)).map(RangeSpec::Suffix);
    }
    let dash = elem.iter().position(|&b| b == b'-')?;
    let first = parse_digits(trim_ows(&elem[..dash]))?;
    let last_part = trim_ows(&elem[dash + 1..]);
    let last = if last_part.is_empty() {
        None
    } else {
        Some(parse_digits(last_part)?)
    };
    if let Some(last) = last {
        if last < first {
            return None; // inverted int-range invalidates the whole header
        }
    }
    Some(RangeSpec::FromTo { first, last })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses one `Range` field value (R-1..R-7, R-20.1).
///
/// Accepts OWS after `=`, around commas and around `-`; empty list elements are skipped
/// but at least one spec is required. Stops as soon as `max_ranges` is exceeded.
pub fn parse_range(value: &[u8], max_ranges: usize) -> Result<Vec<RangeSpec>, RangeIgnored> {
    let eq = value
        .iter()
        .position(|&b| b == b'=')
        .ok_or(RangeIgnored::Invalid)?;
    let unit = &value[..eq];
    if unit.is_empty() || !unit.iter().all(|&b| is_tchar(b)) {
        // Covers `bytes =0-1` (space before `=`, R-1) and a missing unit.
        return Err(RangeIgnored::Invalid);
    }
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return Err(RangeIgnored::UnknownUnit);
    }
    let mut specs = Vec::new();
    for elem in value[eq + 1..].split(|&b| b == b',') {
        let elem = trim_ows(elem);
        if elem.is_empty() {
            continue;
        }
        if specs.len() == max_ranges {
            return Err(RangeIgnored::TooMany);
        }
        specs.push(parse_spec(elem).ok_or(RangeIgnored::Invalid)?);
    }
    if specs.is_empty() {
        return Err(RangeIgnored::Invalid);
    }
    Ok(specs)
}

/// Resolves parsed specs against a representation of `len` bytes (R-11..R-20).
///
/// `coalesce_gap`: ranges that overlap, touch, or are separated by fewer than this many bytes
/// are merged; 0 merges only overlapping or adjacent ranges.
pub fn plan_ranges(specs: &[RangeSpec], len: u64, coalesce_gap: u64) -> RangePlan {
    if len == 0 {
        return RangePlan::Full; // no Content-Range can describe an empty representation
    }
    // Nearly every request asks for one range: planned without the lists `plan_many` builds.
    if let [spec] = specs {
        return resolve(spec, len).map_or(RangePlan::Unsatisfiable, RangePlan::Single);
    }
    plan_many(specs, len, coalesce_gap)
}

/// [`plan_ranges`] for any number of specs, through the lists (len > 0).
fn plan_many(specs: &[RangeSpec], len: u64, coalesce_gap: u64) -> RangePlan {
    let resolved: Vec<ByteRange> = specs.iter().filter_map(|s| resolve(s, len)).collect();
    if resolved.is_empty() {
        return RangePlan::Unsatisfiable;
    }
    // asking for more bytes than the file holds is an attack or a confused client.
    let requested = resolved
        .iter()
        .fold(0u64, |acc, r| acc.saturating_add(r.len()));
    if resolved.len() > 1 && requested > len {
        return RangePlan::Full;
    }
    let mut parts = coalesce(&resolved, coalesce_gap);
    if parts.len() == 1 {
        RangePlan::Single(parts.remove(0))
    } else {
        RangePlan::Multi(parts)
    }
}

/// The bytes `spec` selects from a representation of `len` (> 0) bytes, if any (R-11..R-13).
fn resolve(spec: &RangeSpec, len: u64) -> Option<ByteRange> {
    match *spec {
        RangeSpec::FromTo { first, last } => (first < len).then(|| ByteRange {
            start: first,
            end: last.map_or(len - 1, |l| l.min(len - 1)),
        }),
        RangeSpec::Suffix(0) => None,
        RangeSpec::Suffix(n) => Some(ByteRange {
            start: len.saturating_sub(n),
            end: len - 1,
        }),
    }
}

/// Merges overlapping/nearby ranges; the result keeps request order, each merged range taking
/// the place of its earliest member (RFC 9110 §15.3.7.2).
fn coalesce(ranges: &[ByteRange], gap: u64) -> Vec<ByteRange> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].start, i));
    // (first request index, merged range)
    let mut merged: Vec<(usize, ByteRange)> = Vec::with_capacity(ranges.len());
    for i in order {
        let r = ranges[i];
        match merged.last_mut() {
            Some((idx, m)) if r.start <= m.end.saturating_add(1).saturating_add(gap) => {
                m.end = m.end.max(r.end);
                *idx = (*idx).min(i);
            }
            _ => merged.push((i, r)),
        }
    }
    merged.sort_by_key(|&(idx, _)| idx);
    merged.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use RangeSpec::*;

    fn br(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn plan(h: &str, len: u64, gap: u64) -> RangePlan {
        match parse_range(h.as_bytes(), 16) {
            Ok(specs) => plan_ranges(&specs, len, gap),
            Err(_) => RangePlan::Full,
        }
    }

    /// Go's parser output as (start, length) pairs; no coalescing (spec http-origin §5.6).
    fn go_view(h: &str, size: u64) -> Result<Vec<(u64, u64)>, RangeIgnored> {
        let specs = parse_range(h.as_bytes(), 16)?;
        Ok(specs
            .iter()
            .filter_map(|s| match *s {
                FromTo { first, last } => (first < size).then(|| {
                    (
                        first,
                        last.map_or(size - 1, |l| l.min(size - 1)) - first + 1,
                    )
                }),
                Suffix(0) => None,
                Suffix(n) => Some((size.saturating_sub(n), n.min(size))),
            })
            .collect())
    }

    #[test]
    fn go_parse_range_tests_valid_rows() {
        // spec: http-origin §5.6 P21–P38, parser column (before coalescing)
        type Row = (&'static str, u64, &'static [(u64, u64)]);
        let rows: &[Row] = &[
            ("bytes=0-9", 10, &[(0, 10)]),
            ("bytes=0-", 10, &[(0, 10)]),
            ("bytes=5-", 10, &[(5, 5)]),
            ("bytes=0-20", 10, &[(0, 10)]),
            ("bytes=15-,0-5", 10, &[(0, 6)]),
            ("bytes=1-2,5-", 10, &[(1, 2), (5, 5)]),
            ("bytes=-2 , 7-", 11, &[(9, 2), (7, 4)]),
            ("bytes=0-0 ,2-2, 7-", 11, &[(0, 1), (2, 1), (7, 4)]),
            ("bytes=-5", 10, &[(5, 5)]),
            ("bytes=-15", 10, &[(0, 10)]),
            ("bytes=0-499", 10000, &[(0, 500)]),
            ("bytes=500-999", 10000, &[(500, 500)]),
            ("bytes=-500", 10000, &[(9500, 500)]),
            ("bytes=9500-", 10000, &[(9500, 500)]),
            ("bytes=0-0,-1", 10000, &[(0, 1), (9999, 1)]),
            ("bytes=500-600,601-999", 10000, &[(500, 101), (601, 399)]),
            ("bytes=500-700,601-999", 10000, &[(500, 201), (601, 399)]),
            (
                "bytes=   1 -2   ,  4- 5, 7 - 8 , ,,",
                11,
                &[(1, 2), (4, 2), (7, 2)],
            ),
        ];
        for (h, size, want) in rows {
            assert_eq!(go_view(h, *size).unwrap(), want.to_vec(), "{h}");
        }
    }

    #[test]
    fn go_parse_range_tests_invalid_rows_are_ignored() {
        // spec: http-origin §5.6 P3–P20 and RT-7/RT-8/RT-9: every one is answered 200.
        let invalid = [
            "bytes=",
            "bytes=7",
            "bytes= 7 ",
            "bytes=5-4",
            "bytes=0-2,5-4",
            "bytes=2-5,4-3",
            "bytes=--5,4--3",
            "bytes=A-",
            "bytes=A- ",
            "bytes=A-Z",
            "bytes= -Z",
            "bytes=5-Z",
            "bytes=Ran-dom, garbage",
            "bytes=0x01-0x02",
            "bytes=         ",
            "bytes= , , ,   ",
            "bytes=--6",
            "bytes=--0",
            "bytes=---0",
            "bytes=-6-",
            "bytes = 0-1",
            "=0-1",
            "foo",
            "",
        ];
        for h in invalid {
            assert_eq!(
                parse_range(h.as_bytes(), 16),
                Err(RangeIgnored::Invalid),
                "{h:?}"
            );
            assert_eq!(plan(h, 10, 80), RangePlan::Full, "{h:?}");
        }
        assert_eq!(
            parse_range(b"items=0-1", 16),
            Err(RangeIgnored::UnknownUnit)
        );
    }

    #[test]
    fn unit_is_case_insensitive() {
        // spec: http-origin R-2, RT-2
        for h in ["BYTES=0-0", "Bytes=0-0", "bYtEs=0-0"] {
            assert_eq!(plan(h, 10, 80), RangePlan::Single(br(0, 0)), "{h}");
        }
    }

    #[test]
    fn range_checklist() {
        let l = 1000;
        // spec: http-origin §1.8
        assert_eq!(plan("bytes=0-0", l, 80), RangePlan::Single(br(0, 0))); // RT-1
        assert_eq!(plan("bytes=0-", l, 80), RangePlan::Single(br(0, 999))); // RT-3
        assert_eq!(plan("bytes=-0", l, 80), RangePlan::Unsatisfiable); // RT-4
        assert_eq!(plan("bytes=-1005", l, 80), RangePlan::Single(br(0, 999))); // RT-5
        assert_eq!(plan("bytes=1000-", l, 80), RangePlan::Unsatisfiable); // RT-6
        assert_eq!(plan("bytes=1000-1009", l, 80), RangePlan::Unsatisfiable); // RT-6
        assert_eq!(
            plan("bytes=0-99999999999999999999999", l, 80),
            RangePlan::Single(br(0, 999))
        ); // RT-10
        assert_eq!(
            plan("bytes=99999999999999999999999-", l, 80),
            RangePlan::Unsatisfiable
        ); // RT-11
        assert_eq!(plan("bytes=15-,0-5", 10, 80), RangePlan::Single(br(0, 5))); // RT-12
        assert_eq!(plan("bytes=0-,1-,2-,3-,4-", 11, 80), RangePlan::Full); // RT-14
        assert_eq!(
            plan("bytes=0-99,900-999", l, 80),
            RangePlan::Multi(vec![br(0, 99), br(900, 999)])
        ); // RT-15
        assert_eq!(
            plan("bytes=500-700,601-999", l, 80),
            RangePlan::Single(br(500, 999))
        ); // RT-16
        assert_eq!(plan("bytes=0-5", 0, 80), RangePlan::Full); // RT-17
        assert_eq!(plan("bytes=-5", 0, 80), RangePlan::Full); // RT-17
        assert_eq!(
            plan("bytes=-99999999999999999999999", l, 80),
            RangePlan::Single(br(0, 999))
        ); // R-7 huge suffix = whole file
    }

    #[test]
    fn max_ranges_stops_parsing() {
        // spec: http-origin RT-13, R-20.1
        let h16 = format!(
            "bytes={}",
            (0..16)
                .map(|i| format!("{}-{}", i * 100, i * 100))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse_range(h16.as_bytes(), 16).unwrap().len(), 16);
        let h17 = format!("{h16},2000-2000");
        assert_eq!(parse_range(h17.as_bytes(), 16), Err(RangeIgnored::TooMany));
        // Empty elements do not count towards the limit.
        let sparse = format!("{h16},,,, ,");
        assert!(parse_range(sparse.as_bytes(), 16).is_ok());
        // A huge header is rejected after at most max_ranges+1 specs: the rest is never parsed.
        let huge = "bytes=".to_string() + &"0-0,".repeat(100_000) + "garbage";
        assert_eq!(parse_range(huge.as_bytes(), 16), Err(RangeIgnored::TooMany));
    }

    #[test]
    fn coalescing_follows_go_rows_with_gap() {
        // spec: http-origin §5.6 "video-origin" column with coalesce_gap = 80
        assert_eq!(plan("bytes=1-2,5-", 10, 80), RangePlan::Single(br(1, 9))); // P26
        assert_eq!(plan("bytes=-2 , 7-", 11, 80), RangePlan::Single(br(7, 10))); // P27
        assert_eq!(
            plan("bytes=0-0 ,2-2, 7-", 11, 80),
            RangePlan::Single(br(0, 10))
        ); // P28
        assert_eq!(
            plan("bytes=0-0,-1", 10000, 80),
            RangePlan::Multi(vec![br(0, 0), br(9999, 9999)])
        ); // P35
        assert_eq!(
            plan("bytes=500-600,601-999", 10000, 80),
            RangePlan::Single(br(500, 999))
        ); // P36
           // §5.2 G6–G8 with coalesce_gap = 0 stay multipart.
        assert_eq!(
            plan("bytes=0-0,-2", 11, 0),
            RangePlan::Multi(vec![br(0, 0), br(9, 10)])
        );
        assert_eq!(
            plan("bytes=0-1,5-8", 11, 0),
            RangePlan::Multi(vec![br(0, 1), br(5, 8)])
        );
        assert_eq!(
            plan("bytes=0-1,5-", 11, 0),
            RangePlan::Multi(vec![br(0, 1), br(5, 10)])
        );
        // Adjacent ranges merge even with gap 0.
        assert_eq!(plan("bytes=0-1,2-3", 11, 0), RangePlan::Single(br(0, 3)));
    }

    #[test]
    fn parts_keep_request_order() {
        assert_eq!(
            plan("bytes=900-999,0-99,500-599", 1000, 0),
            RangePlan::Multi(vec![br(900, 999), br(0, 99), br(500, 599)])
        );
        // A merged part takes the place of its earliest member.
        assert_eq!(
            plan("bytes=900-999,0-99,50-150", 1000, 0),
            RangePlan::Multi(vec![br(900, 999), br(0, 150)])
        );
    }

    proptest! {
        /// Any input: no panic; every planned part is in bounds, non-empty, and parts never overlap.
        #[test]
        fn plan_invariants(h in "(?i:bytes)=[0-9 ,\\-]{0,40}", len in 0u64..5000, gap in 0u64..100) {
            match plan(&h, len, gap) {
                RangePlan::Single(r) => prop_assert!(r.start <= r.end && r.end < len),
                RangePlan::Multi(parts) => {
                    prop_assert!(parts.len() >= 2);
                    let mut sorted = parts.clone();
                    sorted.sort_by_key(|r| r.start);
                    for w in sorted.windows(2) {
                        prop_assert!(w[0].end.saturating_add(1).saturating_add(gap) < w[1].start);
                    }
                    let total: u64 = parts.iter().map(ByteRange::len).sum();
                    prop_assert!(total <= len);
                    for r in parts { prop_assert!(r.start <= r.end && r.end < len); }
                }
                RangePlan::Full | RangePlan::Unsatisfiable => {}
            }
        }

        /// `bytes=a-` yields `a..len` whenever a < len.
        #[test]
        fn open_ended(a in 0u64..10_000, len in 1u64..10_000) {
            let p = plan(&format!("bytes={a}-"), len, 80);
            if a < len { prop_assert_eq!(p, RangePlan::Single(br(a, len - 1))); }
            else { prop_assert_eq!(p, RangePlan::Unsatisfiable); }
        }

        /// A single spec (answered without the lists) is planned as the lists plan it.
        #[test]
        fn one_spec_is_planned_as_many_are(
            first in 0u64..6000,
            last in proptest::option::of(0u64..6000),
            suffix in proptest::option::of(0u64..6000),
            len in 1u64..5000,
            gap in 0u64..100,
        ) {
            let spec = match suffix {
                Some(n) => Suffix(n),
                None => FromTo { first, last: last.map(|l| l.max(first)) },
            };
            prop_assert_eq!(plan_ranges(&[spec], len, gap), plan_many(&[spec], len, gap));
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn parser_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_range(&bytes, 16);
        }
    }
}
