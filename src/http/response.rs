//! The HTTP decision for one file request, and the status + headers that express it.
//!
//! [`decide`] composes the pure steps in RFC order: preconditions first (R-17: a 304/412 wins
//! over Range), then Range. [`build_head`] turns a [`Decision`] into status and headers, with
//! the same cache policy on 200, 206, 304 and HEAD (H-21). Bodies are attached by the caller.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

#[cfg(test)]
use super::conditional::Lines;
use super::conditional::{evaluate, ConditionalHeaders, Precondition, Validators};
use super::etag::EntityTag;
use super::multipart::MultipartPlan;
use super::range::{parse_range, plan_ranges, ByteRange, RangePlan};

/// What the client will be told about the selected representation.
#[derive(Debug, Clone)]
pub struct Resource<'a> {
    pub len: u64,
    /// `None` while the content digest is not known yet: the response then carries no ETag.
    pub etag: Option<&'a EntityTag>,
    /// Already truncated to seconds and clamped to `now` (C-4).
    pub last_modified: SystemTime,
    pub content_type: &'a str,
}

#[derive(Debug, Clone, Copy)]
pub struct RangeOptions {
    pub max_ranges: usize,
    pub coalesce_gap: u64,
}

/// What a GET/HEAD of an existing file is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Full,
    Partial(ByteRange),
    Multipart(MultipartPlan),
    NotModified,
    PreconditionFailed,
    RangeNotSatisfiable,
}

/// Extra headers a policy adds (Cache-Control, CDN-Cache-Control, Vary, tags…).
pub type PolicyHeaders = [(HeaderName, HeaderValue)];

/// Decides the answer. `range` holds every `Range` field line (several lines are invalid, R-10);
/// `boundary` is only called when a multipart answer is chosen.
pub fn decide(
    is_get: bool,
    range: &[&[u8]],
    cond: &ConditionalHeaders,
    res: &Resource<'_>,
    opts: RangeOptions,
    now: SystemTime,
    boundary: impl FnOnce() -> String,
) -> Decision {
    // Range is defined for GET only; HEAD answers as the unranged GET would.
    let has_range = is_get && !range.is_empty();
    let validators = Validators {
        etag: res.etag,
        last_modified: res.last_modified,
    };
    match evaluate(cond, &validators, now, is_get, has_range) {
        Precondition::NotModified => return Decision::NotModified,
        Precondition::Failed => return Decision::PreconditionFailed,
        Precondition::Passed { use_range } if !(has_range && use_range) => return Decision::Full,
        Precondition::Passed { .. } => {}
    }
    let [value] = range else {
        return Decision::Full;
    };
    let Ok(specs) = parse_range(value, opts.max_ranges) else {
        return Decision::Full;
    };
    match plan_ranges(&specs, res.len, opts.coalesce_gap) {
        RangePlan::Full => Decision::Full,
        RangePlan::Single(r) => Decision::Partial(r),
        RangePlan::Multi(parts) => Decision::Multipart(MultipartPlan::new(
            &parts,
            res.len,
            res.content_type,
            boundary(),
        )),
        RangePlan::Unsatisfiable => Decision::RangeNotSatisfiable,
    }
}

static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static BYTES: HeaderValue = HeaderValue::from_static("bytes");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Status and headers (no body) for a decision.
///
/// `policy` is the resource's cache policy; it goes on 200, 206 and 304 alike (H-21, C-21).
/// 412 and 416 get `Cache-Control: no-store` instead (H-20) and a short text body whose text
/// is [`error_text`].
pub fn build_head(
    decision: &Decision,
    res: &Resource<'_>,
    policy: &PolicyHeaders,
    now: SystemTime,
) -> (StatusCode, HeaderMap) {
    let shape = match decision {
        Decision::Full => Some(Shape::Full),
        Decision::Partial(_) => Some(Shape::Partial),
        Decision::NotModified => Some(Shape::NotModified),
        _ => None,
    };
    let Some(shape) = shape else {
        return build_head_uncached(decision, res, policy, now);
    };
    let date = unix_secs(now);
    let status = match shape {
        Shape::Full => StatusCode::OK,
        Shape::Partial => StatusCode::PARTIAL_CONTENT,
        Shape::NotModified => StatusCode::NOT_MODIFIED,
    };
    let kept = HEADS.with_borrow(|memo| {
        memo.newest_first()
            .find(|m| m.is_for(shape, date, res, policy))
            .map(|m| m.head.clone())
    });
    let mut h = match kept {
        Some(h) => h,
        None => {
            let (_, built) = build_head_uncached(decision, res, policy, now);
            HEADS
                .with_borrow_mut(|memo| memo.keep(MemoHead::new(shape, date, res, policy, &built)));
            return (status, built);
        }
    };
    if let Decision::Partial(r) = decision {
        // Replaced in place: the kept head has both fields (a clone has no room for more).
        h.insert(header::CONTENT_LENGTH, length_value(r.len()));
        h.insert(header::CONTENT_RANGE, content_range_value(r, res.len));
    }
    (status, h)
}

/// A kept head as sent on the wire, for a writer that encodes heads itself (the plaintext
/// HTTP/1 path): a hit then costs neither a clone of the kept map nor encoding it field by
/// field, which together were about a tenth of a 304's instructions. It holds every field of
/// the head [`build_head`] gives, `Date` and (but for a 304) `Content-Length` included.
#[derive(Debug, Clone)]
pub struct WireHead {
    /// `name: value\r\n` for each field, a 206's `Content-Length` and `Content-Range` excepted.
    fields: bytes::Bytes,
    /// A 206's range and the complete length: those two fields, written after `fields`.
    range: Option<(ByteRange, u64)>,
}

impl WireHead {
    /// Appends the fields, each line ending in CRLF.
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fields);
        if let Some((r, complete)) = &self.range {
            let mut digits = itoa::Buffer::new();
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(digits.format(r.len()).as_bytes());
            out.extend_from_slice(b"\r\ncontent-range: ");
            write_content_range(r, *complete, |part| out.extend_from_slice(part));
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Where a handler leaves a [`WireHead`] for its writer. `wanted` is set by a writer that
/// takes one; the handler fills `head` only for the response it returns with an empty map, so
/// a head is never paired with another response.
#[derive(Debug, Default)]
pub struct WireSlot {
    pub wanted: bool,
    pub head: Option<WireHead>,
}

/// The head [`build_head`] would give, in wire form, when this thread has it kept (a 200, 206
/// or 304 of a representation it answered this second); `None` otherwise.
pub fn build_wire_head(
    decision: &Decision,
    res: &Resource<'_>,
    policy: &PolicyHeaders,
    now: SystemTime,
) -> Option<(StatusCode, WireHead)> {
    let (shape, status, range) = match decision {
        Decision::Full => (Shape::Full, StatusCode::OK, None),
        Decision::Partial(r) => (
            Shape::Partial,
            StatusCode::PARTIAL_CONTENT,
            Some((*r, res.len)),
        ),
        Decision::NotModified => (Shape::NotModified, StatusCode::NOT_MODIFIED, None),
        _ => return None,
    };
    let date = unix_secs(now);
    let fields = HEADS.with_borrow(|memo| {
        memo.newest_first()
            .find(|m| m.is_for(shape, date, res, policy))
            .map(|m| m.wire.clone())
    })?;
    Some((status, WireHead { fields, range }))
}

/// The fields of `head` as sent, in the map's order; without `Content-Length` and
/// `Content-Range` when `skip_range`.
fn wire_fields(head: &HeaderMap, skip_range: bool) -> bytes::Bytes {
    let mut out = Vec::with_capacity(512);
    for (name, value) in head {
        if skip_range && (name == header::CONTENT_LENGTH || name == header::CONTENT_RANGE) {
            continue;
        }
        push_field(&mut out, name, value);
    }
    out.into()
}

/// Appends one field as HTTP/1 sends it: `name: value` and CRLF.
#[inline]
pub fn push_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The decisions whose heads are kept per representation ([`build_head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Full,
    Partial,
    NotModified,
}

/// A head built for one representation, policy and second, kept on this thread: a hot file's
/// 200s, 206s and 304s repeat all their fields but a range's two, and building a dozen fields
/// into a map was the largest part of a small request's CPU. A hit costs one comparison of
/// what the head was made from and a clone of the map.
struct MemoHead {
    shape: Shape,
    date: u64,
    len: u64,
    last_modified: u64,
    etag: Option<(bool, String)>,
    content_type: String,
    policy: Vec<(HeaderName, HeaderValue)>,
    /// For `Partial`, with the Content-Length and Content-Range of the range it was built for.
    head: HeaderMap,
    /// The same fields as sent (for `Partial`, without those two), for [`build_wire_head`].
    wire: bytes::Bytes,
}

impl MemoHead {
    fn new(
        shape: Shape,
        date: u64,
        res: &Resource<'_>,
        policy: &PolicyHeaders,
        head: &HeaderMap,
    ) -> Self {
        MemoHead {
            shape,
            date,
            len: res.len,
            last_modified: unix_secs(res.last_modified),
            etag: res.etag.map(|t| (t.weak, t.tag.clone())),
            content_type: res.content_type.to_owned(),
            policy: policy.to_vec(),
            head: head.clone(),
            wire: wire_fields(head, shape == Shape::Partial),
        }
    }

    /// Whether this head is what [`build_head_uncached`] would build now. Compared by value
    /// (an address could be reused by a different policy or tag).
    fn is_for(&self, shape: Shape, date: u64, res: &Resource<'_>, policy: &PolicyHeaders) -> bool {
        self.shape == shape
            && self.date == date
            && self.len == res.len
            && self.etag.as_ref().map(|(w, t)| (*w, t.as_str()))
                == res.etag.map(|t| (t.weak, t.tag.as_str()))
            && self.last_modified == unix_secs(res.last_modified)
            && self.content_type == res.content_type
            && self.policy.len() == policy.len()
            && self.policy.iter().zip(policy).all(|(a, b)| a == b)
    }
}

thread_local! {
    static HEADS: std::cell::RefCell<Kept<MemoHead>> = std::cell::RefCell::new(Kept::default());
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`build_head`] without the per-thread memo.
fn build_head_uncached(
    decision: &Decision,
    res: &Resource<'_>,
    policy: &PolicyHeaders,
    now: SystemTime,
) -> (StatusCode, HeaderMap) {
    let mut h = spare_headers();
    h.insert(header::DATE, http_date(now));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    let status = match decision {
        Decision::Full | Decision::Partial(_) | Decision::Multipart(_) | Decision::NotModified => {
            if let Some(tag) = res.etag {
                h.insert(header::ETAG, etag_value(tag));
            }
            h.insert(header::LAST_MODIFIED, http_date(res.last_modified));
            for (name, value) in policy {
                h.append(name.clone(), value.clone());
            }
            match decision {
                Decision::NotModified => StatusCode::NOT_MODIFIED, // C-19/C-20: no CT, no CL
                Decision::Full => {
                    h.insert(header::ACCEPT_RANGES, BYTES.clone());
                    h.insert(header::CONTENT_TYPE, content_type_value(res.content_type));
                    h.insert(header::CONTENT_LENGTH, length_value(res.len));
                    StatusCode::OK
                }
                Decision::Partial(r) => {
                    h.insert(header::ACCEPT_RANGES, BYTES.clone());
                    h.insert(header::CONTENT_TYPE, content_type_value(res.content_type));
                    h.insert(header::CONTENT_LENGTH, length_value(r.len()));
                    h.insert(header::CONTENT_RANGE, content_range_value(r, res.len));
                    StatusCode::PARTIAL_CONTENT
                }
                Decision::Multipart(plan) => {
                    h.insert(header::ACCEPT_RANGES, BYTES.clone());
                    h.insert(header::CONTENT_TYPE, header_value(&plan.content_type()));
                    h.insert(
                        header::CONTENT_LENGTH,
                        HeaderValue::from(plan.content_length),
                    );
                    StatusCode::PARTIAL_CONTENT
                }
                _ => unreachable!("outer match limits the variants"),
            }
        }
        Decision::PreconditionFailed => {
            error_headers(&mut h, error_text(StatusCode::PRECONDITION_FAILED));
            StatusCode::PRECONDITION_FAILED
        }
        Decision::RangeNotSatisfiable => {
            error_headers(&mut h, error_text(StatusCode::RANGE_NOT_SATISFIABLE));
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{}", res.len)),
            );
            StatusCode::RANGE_NOT_SATISFIABLE
        }
    };
    (status, h)
}

/// Headers for a short text error (no representation metadata: R-35, C-23).
fn error_headers(h: &mut HeaderMap, text: &str) {
    h.insert(header::CONTENT_TYPE, TEXT_PLAIN.clone());
    h.insert(header::CONTENT_LENGTH, length_value(text.len() as u64));
    h.insert(header::CACHE_CONTROL, NO_STORE.clone());
}

/// A complete error head: Date, nosniff, text/plain, exact length and the given Cache-Control.
pub fn error_head(text: &str, cache_control: &HeaderValue, now: SystemTime) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(6);
    h.insert(header::DATE, http_date(now));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    error_headers(&mut h, text);
    h.insert(header::CACHE_CONTROL, cache_control.clone());
    h
}

/// The short body of an error response, one line ending in a newline.
pub fn error_text(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad request\n",
        StatusCode::FORBIDDEN => "forbidden\n",
        StatusCode::NOT_FOUND => "not found\n",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed\n",
        StatusCode::PRECONDITION_FAILED => "precondition failed\n",
        StatusCode::RANGE_NOT_SATISFIABLE => "range not satisfiable\n",
        StatusCode::SERVICE_UNAVAILABLE => "service unavailable\n",
        _ => "internal server error\n",
    }
}

/// An HTTP-date header value. `Date` changes once a second and a hot file's `Last-Modified` not
/// at all, so nearly every response reuses a value kept on this thread.
fn http_date(t: SystemTime) -> HeaderValue {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    recent_value(&RECENT_DATES, &secs.to_le_bytes(), || {
        header_value(&httpdate::fmt_http_date(t))
    })
}

/// A header value for `key`, built by `make`. The last few values built on this thread are kept:
/// a hot file's dates, ETag and Content-Type are the same on every response, so nearly every
/// response reuses them instead of formatting and allocating them again.
fn recent_value(
    cache: &'static std::thread::LocalKey<std::cell::RefCell<Recent>>,
    key: &[u8],
    make: impl FnOnce() -> HeaderValue,
) -> HeaderValue {
    cache.with_borrow_mut(|recent| {
        if let Some((_, v)) = recent.newest_first().find(|(k, _)| k.as_slice() == key) {
            return v.clone();
        }
        let v = make();
        recent.keep((key.to_vec(), v.clone()));
        v
    })
}

/// Items kept per thread (header values, heads): a few hot ones at once.
const KEPT: usize = 8;

/// The last [`KEPT`] items made on this thread; a new one replaces the oldest.
struct Kept<T> {
    slots: Vec<T>,
    next: usize,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            slots: Vec::new(),
            next: 0,
        }
    }
}

impl<T> Kept<T> {
    /// The items, the one kept last first: this second's head is the one nearly every
    /// request asks for, and a scan from the first slot compared it third on average.
    fn newest_first(&self) -> impl Iterator<Item = &T> {
        let len = self.slots.len();
        // Until the ring is full `next` stays 0 and the newest item is the last pushed.
        (1..=len).map(move |i| &self.slots[(self.next + len - i) % len])
    }

    fn keep(&mut self, item: T) {
        if self.slots.len() < KEPT {
            self.slots.push(item);
        } else {
            self.slots[self.next] = item;
            self.next = (self.next + 1) % KEPT;
        }
    }
}

type Recent = Kept<(Vec<u8>, HeaderValue)>;

thread_local! {
    static RECENT_DATES: std::cell::RefCell<Recent> = std::cell::RefCell::new(Recent::default());
    static RECENT_ETAGS: std::cell::RefCell<Recent> = std::cell::RefCell::new(Recent::default());
    static RECENT_TYPES: std::cell::RefCell<Recent> = std::cell::RefCell::new(Recent::default());
}

/// A `Content-Length` value. The last few lengths built on this thread are kept (keyed by the
/// number, so a miss costs no more than building it): a hot file, a CDN's fixed-size range
/// fills and the short error texts repeat theirs, and `HeaderValue::from` allocates each time.
fn length_value(n: u64) -> HeaderValue {
    /// The kept (length, value) pairs and the slot the next miss replaces.
    type Lengths = ([Option<(u64, HeaderValue)>; 4], usize);
    thread_local! {
        static RECENT_LENGTHS: std::cell::RefCell<Lengths> =
            const { std::cell::RefCell::new(([None, None, None, None], 0)) };
    }
    RECENT_LENGTHS.with_borrow_mut(|(slots, next)| {
        if let Some((_, v)) = slots.iter().flatten().find(|(k, _)| *k == n) {
            return v.clone();
        }
        let v = HeaderValue::from(n);
        slots[*next] = Some((n, v.clone()));
        *next = (*next + 1) % slots.len();
        v
    })
}

/// The `ETag` field value of `tag`. Weak tags are keyed with a leading DQUOTE, which no
/// opaque tag can contain, so a weak `W/"x"` and a strong `"W/x"` never share a slot.
fn etag_value(tag: &EntityTag) -> HeaderValue {
    let weak_key;
    let key: &[u8] = if tag.weak {
        weak_key = [b"\"", tag.tag.as_bytes()].concat();
        &weak_key
    } else {
        tag.tag.as_bytes()
    };
    recent_value(&RECENT_ETAGS, key, || header_value(&tag.to_string()))
}

fn content_type_value(content_type: &str) -> HeaderValue {
    recent_value(&RECENT_TYPES, content_type.as_bytes(), || {
        header_value(content_type)
    })
}

/// Header maps no longer needed (a response's once its head is sent, a request's once it is
/// answered), cleared (a cleared map keeps its room), kept on this thread for the next request
/// or response: building a map cost two allocations each.
const SPARE_MAPS: usize = 16;
/// A head has about a dozen fields; a map grown past this many is freed, not kept.
const SPARE_MAX_FIELDS: usize = 32;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty header map, reused when one is at hand.
pub fn spare_headers() -> HeaderMap {
    SPARE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| HeaderMap::with_capacity(12))
}

/// Hands a header map back for reuse: a response's once its head is sent (a writer that
/// encodes heads itself calls this), a request's once it is answered. Maps dropped elsewhere
/// are simply freed.
pub fn recycle_headers(mut h: HeaderMap) {
    // A map that never grew (a response whose head went in wire form) has no room to reuse.
    if h.capacity() == 0 || h.capacity() > SPARE_MAX_FIELDS {
        return;
    }
    h.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(h);
        }
    });
}

/// The `Content-Range` value, formatted on the stack: one copy into the value instead of a
/// `String` and a copy.
fn content_range_value(r: &ByteRange, complete: u64) -> HeaderValue {
    // "bytes " + three u64s of at most 20 digits + "-" + "/". Written with itoa: the `fmt`
    // machinery was a few per cent of a small range's CPU.
    let mut buf = [0u8; 68];
    let mut n = 0;
    write_content_range(r, complete, |part| {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    });
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `bytes FIRST-LAST/COMPLETE`, in pieces handed to `push` (a map's value and a wire head
/// write the same text into different buffers).
fn write_content_range(r: &ByteRange, complete: u64, mut push: impl FnMut(&[u8])) {
    let mut digits = itoa::Buffer::new();
    push(b"bytes ");
    push(digits.format(r.start).as_bytes());
    push(b"-");
    push(digits.format(r.end).as_bytes());
    push(b"/");
    push(digits.format(complete).as_bytes());
}

/// Every value we build is ASCII without control characters; fall back to an empty value
/// rather than panic if that ever stops being true.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn kept_lengths_are_their_own_numbers() {
        // Repeats (hits), more distinct lengths than slots (evictions), and back again.
        for n in [
            0u64,
            4096,
            4096,
            1,
            2,
            3,
            4,
            5,
            4096,
            u64::MAX,
            0,
            65_536,
            65_536,
        ] {
            assert_eq!(length_value(n), n.to_string().as_str());
        }
    }

    #[test]
    fn kept_values_are_the_values_of_their_own_keys() {
        // More distinct tags than slots, each asked twice, strong and weak with the same
        // opaque part: every answer is the formatted tag itself.
        for round in 0..2 {
            for i in 0..(KEPT * 2) {
                for weak in [false, true] {
                    let tag = EntityTag {
                        weak,
                        tag: format!("t{i}"),
                    };
                    assert_eq!(etag_value(&tag), tag.to_string().as_str(), "round {round}");
                }
            }
        }
        // A strong tag whose opaque part looks like a weak tag's field value, then the weak one.
        for weak in [false, true] {
            let tag = EntityTag {
                weak,
                tag: if weak { "x" } else { "W/x" }.into(),
            };
            assert_eq!(etag_value(&tag), tag.to_string().as_str());
        }
        for ct in [
            "video/mp4",
            "video/mp2t",
            "video/mp4",
            "application/vnd.apple.mpegurl",
        ] {
            assert_eq!(content_type_value(ct), ct);
        }
    }

    const OPTS: RangeOptions = RangeOptions {
        max_ranges: 16,
        coalesce_gap: 80,
    };

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn kept_items_come_newest_first() {
        let mut kept = Kept::default();
        let order = |k: &Kept<usize>| k.newest_first().copied().collect::<Vec<_>>();
        assert!(order(&kept).is_empty());
        for i in 0..3 {
            kept.keep(i);
        }
        assert_eq!(order(&kept), [2, 1, 0]);
        for i in 3..KEPT + 3 {
            kept.keep(i);
        }
        let newest: Vec<usize> = (3..KEPT + 3).rev().collect();
        assert_eq!(order(&kept), newest);
    }

    fn res(tag: &EntityTag) -> Resource<'_> {
        Resource {
            len: 1000,
            etag: Some(tag),
            last_modified: UNIX_EPOCH + Duration::from_secs(1_600_000_000),
            content_type: "video/mp4",
        }
    }

    /// Every head from the per-thread memo equals the head built afresh, whatever changed
    /// between calls: the policy (a private answer after a public one), the tag, the second,
    /// the range, the length, the type, the modification time.
    #[test]
    fn kept_heads_are_the_heads_built_afresh() {
        let public = vec![(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )];
        let private = vec![(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        )];
        let tags = [
            EntityTag::parse("\"abc\"").unwrap(),
            EntityTag::parse("W/\"abc\"").unwrap(),
            EntityTag::parse("\"abd\"").unwrap(),
        ];
        let decisions = [
            Decision::Full,
            Decision::NotModified,
            Decision::Partial(ByteRange { start: 0, end: 9 }),
            Decision::Partial(ByteRange {
                start: 10,
                end: 499,
            }),
            Decision::PreconditionFailed,
        ];
        for round in 0..3 {
            for policy in [&public, &private] {
                for tag in &tags {
                    for (len, content_type) in [(1000, "video/mp4"), (2000, "video/mp2t")] {
                        for second in [0, 1] {
                            for decision in &decisions {
                                let mut r = res(tag);
                                r.len = len;
                                r.content_type = content_type;
                                r.last_modified += Duration::from_secs(round);
                                let at = now() + Duration::from_secs(second);
                                assert_eq!(
                                    build_head(decision, &r, policy, at),
                                    build_head_uncached(decision, &r, policy, at),
                                    "{decision:?} {tag:?} {len} {second} {policy:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
        // The same inputs again, now all answered from the memo where it applies.
        let r = res(&tags[0]);
        let (status, head) = build_head(&decisions[3], &r, &private, now());
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(head[header::CACHE_CONTROL], "private, no-store");
        assert_eq!(head[header::CONTENT_RANGE], "bytes 10-499/1000");
        assert_eq!(head[header::CONTENT_LENGTH], "490");
    }

    fn run(is_get: bool, range: &[&str], cond: ConditionalHeaders<'_>) -> Decision {
        let tag = EntityTag::parse("\"abc\"").unwrap();
        let range: Vec<&[u8]> = range.iter().map(|r| r.as_bytes()).collect();
        decide(is_get, &range, &cond, &res(&tag), OPTS, now(), || {
            "B".into()
        })
    }

    #[test]
    fn head_ignores_range() {
        // spec: http-origin R-40, RT-18
        assert_eq!(
            run(false, &["bytes=0-4"], Default::default()),
            Decision::Full
        );
        assert_eq!(
            run(true, &["bytes=0-4"], Default::default()),
            Decision::Partial(ByteRange { start: 0, end: 4 })
        );
    }

    #[test]
    fn preconditions_beat_range() {
        // spec: http-origin R-17, RT-19
        let cond = ConditionalHeaders {
            if_none_match: Lines::from_iter(["\"abc\""]),
            ..Default::default()
        };
        assert_eq!(run(true, &["bytes=0-4"], cond), Decision::NotModified);
    }

    #[test]
    fn two_range_lines_are_ignored() {
        // spec: http-origin R-10
        assert_eq!(
            run(true, &["bytes=0-4", "bytes=5-6"], Default::default()),
            Decision::Full
        );
    }

    #[test]
    fn same_policy_on_200_206_304() {
        // spec: http-origin H-21, C-19
        let tag = EntityTag::parse("\"abc\"").unwrap();
        let r = res(&tag);
        let policy = [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )];
        for d in [
            Decision::Full,
            Decision::Partial(ByteRange { start: 0, end: 1 }),
            Decision::NotModified,
        ] {
            let (_, h) = build_head(&d, &r, &policy, now());
            assert_eq!(h[header::CACHE_CONTROL], "public, max-age=60");
            assert_eq!(h[header::ETAG], "\"abc\"");
            assert!(h.contains_key(header::LAST_MODIFIED));
            assert!(h.contains_key(header::DATE));
        }
        let (s, h) = build_head(&Decision::NotModified, &r, &policy, now());
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        assert!(!h.contains_key(header::CONTENT_TYPE));
        assert!(!h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn error_heads() {
        let tag = EntityTag::parse("\"abc\"").unwrap();
        let r = res(&tag);
        let (s, h) = build_head(&Decision::RangeNotSatisfiable, &r, &[], now());
        assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(h[header::CONTENT_RANGE], "bytes */1000");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(!h.contains_key(header::ETAG));
        let (s, h) = build_head(&Decision::PreconditionFailed, &r, &[], now());
        assert_eq!(s, StatusCode::PRECONDITION_FAILED);
        assert_eq!(h[header::CACHE_CONTROL], "no-store"); // C-23
        assert_eq!(
            h[header::CONTENT_LENGTH],
            error_text(StatusCode::PRECONDITION_FAILED)
                .len()
                .to_string()
                .as_str()
        );
    }

    #[test]
    fn range_206_headers() {
        let tag = EntityTag::parse("\"abc\"").unwrap();
        let r = res(&tag);
        let (s, h) = build_head(
            &Decision::Partial(ByteRange { start: 5, end: 9 }),
            &r,
            &[],
            now(),
        );
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert_eq!(h[header::CONTENT_RANGE], "bytes 5-9/1000");
        assert_eq!(h[header::CONTENT_LENGTH], "5");
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        let (_, h) = build_head(&Decision::Full, &r, &[], now());
        assert!(!h.contains_key(header::CONTENT_RANGE));
    }

    #[test]
    fn content_range_values_are_what_content_range_writes() {
        for (start, end, len) in [
            (0, 0, 1),
            (4096, 8191, 268_435_456),
            (0, u64::MAX - 1, u64::MAX),
        ] {
            let r = ByteRange { start, end };
            assert_eq!(
                content_range_value(&r, len).to_str().unwrap(),
                r.content_range(len)
            );
        }
    }

    #[test]
    fn a_recycled_map_carries_nothing_into_the_next_head() {
        let tag = EntityTag::parse("\"abc\"").unwrap();
        let r = res(&tag);
        let (_, mut h) = build_head(
            &Decision::Partial(ByteRange { start: 5, end: 9 }),
            &r,
            &[(header::VARY, HeaderValue::from_static("Origin"))],
            now(),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        recycle_headers(h);
        let (s, h) = build_head(&Decision::NotModified, &r, &[], now());
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["date", "etag", "last-modified", "x-content-type-options"]
        );
        // A map grown past the usual size is freed, not kept.
        let mut big = HeaderMap::new();
        for i in 0..40 {
            big.insert(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let before = SPARE.with_borrow(Vec::len);
        recycle_headers(big);
        assert_eq!(SPARE.with_borrow(Vec::len), before);
    }
}
