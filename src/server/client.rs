//! Who is the client, and which CDN sent the request. Pure: headers and addresses in, answers out.
//!
//! Behind a CDN the TCP peer is an edge server, so per-client limits, IP-bound tokens and logs
//! need the viewer's address from a header the CDN sets. Such a header is believed only when the
//! peer is in a configured trusted range; anyone else could send it (spec signed-urls §6,
//! "IP binding").

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// Where a client address header comes from and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHeader {
    /// `CloudFront-Viewer-Address: 198.51.100.10:46532` (IPv6 without brackets: the port is
    /// after the last colon).
    CloudfrontViewerAddress,
    /// A header holding one address: `CF-Connecting-IP`, `True-Client-IP`, `Fastly-Client-IP`.
    Single(http::HeaderName),
    /// `X-Forwarded-For: client, proxy1, proxy2`: the rightmost address that is not a trusted
    /// proxy is the client (the left part is whatever the client chose to send).
    XForwardedFor,
}

/// A CDN whose edge sets a client-address header of its own and overwrites a viewer's copy of
/// it (so the header can be believed from that CDN's edges, and only from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeCdn {
    /// No CDN header is believed; only `X-Forwarded-For` (or a header of your own proxy).
    None,
    Cloudfront,
    Cloudflare,
    Akamai,
    Fastly,
}

impl EdgeCdn {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeCdn::None => "none",
            EdgeCdn::Cloudfront => "cloudfront",
            EdgeCdn::Cloudflare => "cloudflare",
            EdgeCdn::Akamai => "akamai",
            EdgeCdn::Fastly => "fastly",
        }
    }
}

impl ClientHeader {
    /// The CDNs whose edges set this header (and replace what a viewer sent); empty for
    /// `X-Forwarded-For` and headers of the operator's own proxies.
    pub fn set_by(&self) -> &'static [EdgeCdn] {
        match self {
            ClientHeader::CloudfrontViewerAddress => &[EdgeCdn::Cloudfront],
            ClientHeader::XForwardedFor => &[],
            ClientHeader::Single(name) => match name.as_str() {
                "cf-connecting-ip" | "cf-connecting-ipv6" => &[EdgeCdn::Cloudflare],
                // Akamai's header; Cloudflare Enterprise can send it too.
                "true-client-ip" => &[EdgeCdn::Akamai, EdgeCdn::Cloudflare],
                "fastly-client-ip" => &[EdgeCdn::Fastly],
                _ => &[],
            },
        }
    }

    /// The header's name as configured (lowercase).
    pub fn name(&self) -> &str {
        match self {
            ClientHeader::CloudfrontViewerAddress => "cloudfront-viewer-address",
            ClientHeader::XForwardedFor => "x-forwarded-for",
            ClientHeader::Single(name) => name.as_str(),
        }
    }

    /// Whether this header may be believed with `cdn` in front. A CDN's own header is a
    /// viewer's to forge behind anything else (an ALB, nginx, another CDN pass it through), so
    /// it needs the operator to name that CDN; headers of several CDNs at once are refused.
    pub fn check(&self, cdn: EdgeCdn) -> Result<(), String> {
        let owners = self.set_by();
        if owners.is_empty() || owners.contains(&cdn) {
            return Ok(());
        }
        let names: Vec<&str> = owners.iter().map(|c| c.as_str()).collect();
        Err(format!(
            "`{}` is set by the edges of {} only; behind anything else a viewer's own copy passes through \
             and anyone can choose their address. List it only with proxy.cdn = \"{}\" (that CDN directly in front), \
             or use x-forwarded-for",
            self.name(),
            names.join(" or "),
            names[0]
        ))
    }

    /// Parses a configured header name.
    pub fn parse(name: &str) -> Result<ClientHeader, String> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "cloudfront-viewer-address" => Ok(ClientHeader::CloudfrontViewerAddress),
            "x-forwarded-for" => Ok(ClientHeader::XForwardedFor),
            _ => http::HeaderName::from_bytes(lower.as_bytes())
                .map(ClientHeader::Single)
                .map_err(|_| format!("`{name}` is not a valid header name")),
        }
    }
}

/// Trusted proxy ranges and the headers they may use to name the client.
#[derive(Debug, Clone, Default)]
pub struct ClientResolver {
    trusted: Vec<IpNet>,
    headers: Vec<ClientHeader>,
}

impl ClientResolver {
    pub fn new(trusted: Vec<IpNet>, headers: Vec<ClientHeader>) -> Self {
        ClientResolver { trusted, headers }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client address: the peer itself unless the peer is trusted and one of the headers
    /// (first present and parseable wins) names someone else.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return canonical(peer);
        }
        for h in &self.headers {
            let found = match h {
                ClientHeader::CloudfrontViewerAddress => headers
                    .get("cloudfront-viewer-address")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_addr_with_port),
                ClientHeader::Single(name) => headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse().ok()),
                ClientHeader::XForwardedFor => self.forwarded_for_client(headers),
            };
            if let Some(ip) = found {
                return canonical(ip);
            }
        }
        canonical(peer)
    }

    fn forwarded_for_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        // Several header lines are one list, in order (RFC 9110 §5.3).
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let s = v.to_str().ok()?;
            for part in s.split(',') {
                // An unparseable hop ends what can be believed: stop trusting to the left of it.
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) => hops.push(ip),
                    Err(_) => hops.clear(),
                }
            }
        }
        let mut last = None;
        for ip in hops.into_iter().rev() {
            if !self.is_trusted(ip) {
                return Some(ip);
            }
            last = Some(ip);
        }
        // Every hop is a trusted proxy: the leftmost is the best we know.
        last
    }
}

/// `1.2.3.4:5678`, `[2001:db8::1]:443`, `2001:db8::1:443` (CloudFront's IPv6 form) or a bare IP.
fn parse_addr_with_port(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    if let Some((ip, port)) = s.rsplit_once(':') {
        if port.parse::<u16>().is_ok() {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                return Some(ip);
            }
        }
    }
    s.parse().ok()
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket reports) as plain IPv4, so one
/// client is one key and `10.0.0.0/8` matches it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses `trusted` CIDR ranges (a bare address is a /32 or /128).
pub fn parse_ranges(ranges: &[String]) -> Result<Vec<IpNet>, String> {
    ranges
        .iter()
        .map(|r| {
            r.parse::<IpNet>()
                .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{r}` is not an address or CIDR range"))
        })
        .collect()
}

/// The CDN a request came through, from the headers each one adds, and its edge location
/// when the headers tell (logged so traffic can be traced to a PoP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdnHop<'a> {
    pub cdn: &'static str,
    pub pop: Option<&'a str>,
}

pub fn detect_cdn(headers: &HeaderMap) -> Option<CdnHop<'_>> {
    // One pass over the fields (a request has a handful): looking each marker up by name would
    // parse and hash seven names per request.
    let (mut cloudfront, mut pop, mut ray, mut akamai, mut fastly) =
        (false, None, None, false, false);
    for (name, value) in headers {
        let text = || value.to_str().ok();
        match name.as_str() {
            "x-amz-cf-id" => cloudfront = true,
            "via" => cloudfront |= text().is_some_and(|v| v.contains("(CloudFront)")),
            "x-amz-cf-pop" => pop = pop.or_else(text),
            "cf-ray" => ray = ray.or_else(text),
            "akamai-origin-hop" | "akamai-grn" => akamai = true,
            "fastly-ff" | "fastly-client-ip" => fastly = true,
            _ => {}
        }
    }
    if cloudfront {
        return Some(CdnHop {
            cdn: "cloudfront",
            pop,
        });
    }
    if let Some(ray) = ray {
        // `8c7f1e2a3b4c5d6e-IAD`: the suffix is the data centre.
        return Some(CdnHop {
            cdn: "cloudflare",
            pop: ray.rsplit_once('-').map(|(_, colo)| colo),
        });
    }
    if akamai {
        return Some(CdnHop {
            cdn: "akamai",
            pop: None,
        });
    }
    if fastly {
        return Some(CdnHop {
            cdn: "fastly",
            pop: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn resolver(trusted: &[&str], names: &[&str]) -> ClientResolver {
        ClientResolver::new(
            parse_ranges(&trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
            names
                .iter()
                .map(|n| ClientHeader::parse(n).unwrap())
                .collect(),
        )
    }

    const ALL: &[&str] = &[
        "cloudfront-viewer-address",
        "cf-connecting-ip",
        "x-forwarded-for",
    ];

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let r = resolver(&["10.0.0.0/8"], ALL);
        let h = headers(&[
            ("cf-connecting-ip", "203.0.113.9"),
            ("x-forwarded-for", "1.1.1.1"),
        ]);
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(r.client(peer, &h), peer);
        // No trusted ranges at all: the peer, always.
        let none = resolver(&[], ALL);
        assert_eq!(
            none.client("10.1.1.1".parse().unwrap(), &h),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn trusted_peer_header_order() {
        let r = resolver(&["10.0.0.0/8", "::1"], ALL);
        let peer: IpAddr = "10.2.3.4".parse().unwrap();
        let h = headers(&[
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
            ("cf-connecting-ip", "203.0.113.9"),
        ]);
        assert_eq!(
            r.client(peer, &h),
            "198.51.100.10".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("cf-connecting-ip", " 2001:db8::7 ")]);
        assert_eq!(r.client(peer, &h), "2001:db8::7".parse::<IpAddr>().unwrap());
        // Unparseable header: fall through to the next, then to the peer.
        let h = headers(&[("cf-connecting-ip", "garbage")]);
        assert_eq!(r.client(peer, &h), peer);
        assert_eq!(
            r.client(
                "::1".parse().unwrap(),
                &headers(&[("cf-connecting-ip", "203.0.113.9")])
            ),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn cloudfront_viewer_address_forms() {
        for (v, want) in [
            ("198.51.100.10:46532", "198.51.100.10"),
            (
                "2001:db8:85a3::8a2e:370:7334:46532",
                "2001:db8:85a3::8a2e:370:7334",
            ),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("192.0.2.1", "192.0.2.1"),
        ] {
            assert_eq!(parse_addr_with_port(v), Some(want.parse().unwrap()), "{v}");
        }
        assert_eq!(parse_addr_with_port("nope:12"), None);
    }

    #[test]
    fn forwarded_for_takes_rightmost_untrusted() {
        let r = resolver(&["10.0.0.0/8"], &["x-forwarded-for"]);
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        // The client claims 6.6.6.6; the real client is the one our trusted proxy appended.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.9")]);
        assert_eq!(
            r.client(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Several lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.8, 10.1.1.1"),
        ]);
        assert_eq!(
            r.client(peer, &h),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
        // All trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(r.client(peer, &h), "10.9.9.9".parse::<IpAddr>().unwrap());
        // Garbage to the right of a hop: nothing left of it is believed.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, junk")]);
        assert_eq!(r.client(peer, &h), peer);
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let r = resolver(&["10.0.0.0/8"], ALL);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let h = headers(&[("cf-connecting-ip", "203.0.113.9")]);
        assert_eq!(
            r.client(mapped, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let plain = resolver(&[], ALL);
        assert_eq!(
            plain.client(mapped, &h),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bad_ranges_and_names_are_errors() {
        assert!(parse_ranges(&["10.0.0.0/33".into()]).is_err());
        assert!(parse_ranges(&["localhost".into()]).is_err());
        assert_eq!(
            parse_ranges(&["127.0.0.1".into()]).unwrap()[0].prefix_len(),
            32
        );
        assert!(ClientHeader::parse("bad header").is_err());
    }

    #[test]
    fn cdn_detection() {
        let h = headers(&[("x-amz-cf-id", "abc=="), ("x-amz-cf-pop", "IAD89-C1")]);
        assert_eq!(
            detect_cdn(&h),
            Some(CdnHop {
                cdn: "cloudfront",
                pop: Some("IAD89-C1")
            })
        );
        let h = headers(&[("via", "1.1 abc.cloudfront.net (CloudFront)")]);
        assert_eq!(detect_cdn(&h).unwrap().cdn, "cloudfront");
        let h = headers(&[("cf-ray", "8c7f1e2a3b4c5d6e-FRA")]);
        assert_eq!(
            detect_cdn(&h),
            Some(CdnHop {
                cdn: "cloudflare",
                pop: Some("FRA")
            })
        );
        assert_eq!(
            detect_cdn(&headers(&[("akamai-origin-hop", "2")]))
                .unwrap()
                .cdn,
            "akamai"
        );
        assert_eq!(detect_cdn(&headers(&[("user-agent", "curl")])), None);
    }
}
