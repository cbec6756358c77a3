use super::*;

fn addrs(trusted: &[&str], header: ForwardedHeader) -> ClientAddrs {
    ClientAddrs::new(&ClientIpConfig {
        trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
        header,
    })
    .unwrap()
}

#[test]
fn the_header_is_configured_by_its_name() {
    for (text, header) in [
        ("x-forwarded-for", ForwardedHeader::XForwardedFor),
        ("forwarded", ForwardedHeader::Forwarded),
    ] {
        let config: ClientIpConfig = toml::from_str(&format!("header = \"{text}\"")).unwrap();
        assert_eq!(config.header, header);
        assert_eq!(header.name(), text);
    }
    assert!(toml::from_str::<ClientIpConfig>("header = \"x_forwarded_for\"").is_err());
}

fn headers(name: &str, lines: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            line.parse().unwrap(),
        );
    }
    map
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn client(addrs: &ClientAddrs, peer: &str, xff: &[&str]) -> IpAddr {
    addrs
        .client_ip(Some(ip(peer)), &headers("x-forwarded-for", xff))
        .unwrap()
}

#[test]
fn by_default_nobody_is_trusted_and_the_peer_is_the_client() {
    let addrs = ClientAddrs::default();
    assert_eq!(
        client(&addrs, "198.51.100.7", &["203.0.113.1"]),
        ip("198.51.100.7")
    );
}

#[test]
fn a_header_from_an_untrusted_peer_is_ignored() {
    let addrs = addrs(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    // The client talks to the gateway directly and claims to be someone else.
    assert_eq!(
        client(&addrs, "198.51.100.7", &["203.0.113.1, 10.0.0.5"]),
        ip("198.51.100.7")
    );
}

#[test]
fn the_walk_goes_right_to_left_past_every_trusted_hop() {
    let addrs = addrs(
        &["10.0.0.0/8", "192.168.1.0/24", "2001:db8:ffff::/48"],
        ForwardedHeader::XForwardedFor,
    );
    // The client wrote "1.1.1.1" itself; the edge proxy appended the real 203.0.113.9, two
    // inner proxies appended theirs.
    let chain = ["1.1.1.1, 203.0.113.9, 192.168.1.20", "2001:db8:ffff::4"];
    assert_eq!(client(&addrs, "10.1.2.3", &chain), ip("203.0.113.9"));
    // Every hop trusted: the leftmost is the client.
    assert_eq!(
        client(&addrs, "10.1.2.3", &["192.168.1.30, 10.9.9.9"]),
        ip("192.168.1.30")
    );
    // A trusted peer with no header at all is the client itself.
    assert_eq!(client(&addrs, "10.1.2.3", &[]), ip("10.1.2.3"));
}

#[test]
fn a_malformed_entry_stops_the_walk_at_the_last_good_hop() {
    let addrs = addrs(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    for bad in [
        "unknown",
        "",
        "1.2.3",
        "999.1.1.1",
        "1.2.3.4:99999",
        "[::1",
        "evil.example",
    ] {
        let line = format!("203.0.113.1, {bad}, 10.0.0.2");
        assert_eq!(
            client(&addrs, "10.0.0.1", &[&line]),
            ip("10.0.0.2"),
            "entry {bad:?}"
        );
    }
    // Malformed right next to the peer: the peer is the last good hop.
    assert_eq!(
        client(&addrs, "10.0.0.1", &["203.0.113.1, garbage"]),
        ip("10.0.0.1")
    );
    // A header line that is not text stops the walk too.
    let mut map = HeaderMap::new();
    map.append(
        "x-forwarded-for",
        http::HeaderValue::from_bytes(b"203.0.113.1, \xff").unwrap(),
    );
    assert_eq!(
        addrs.client_ip(Some(ip("10.0.0.1")), &map),
        Some(ip("10.0.0.1"))
    );
}

#[test]
fn ports_brackets_and_mapped_addresses_are_read() {
    let addrs = addrs(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    assert_eq!(
        client(&addrs, "10.0.0.1", &["203.0.113.1:4711"]),
        ip("203.0.113.1")
    );
    assert_eq!(
        client(&addrs, "10.0.0.1", &["[2001:db8::7]:443"]),
        ip("2001:db8::7")
    );
    assert_eq!(
        client(&addrs, "10.0.0.1", &["::ffff:203.0.113.1"]),
        ip("203.0.113.1")
    );
    // A dual-stack listener reports an IPv4 proxy as a mapped address: still trusted.
    assert_eq!(
        client(&addrs, "::ffff:10.0.0.1", &["203.0.113.1"]),
        ip("203.0.113.1")
    );
}

#[test]
fn the_forwarded_header_is_read_by_its_for_parameter() {
    let addrs = addrs(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
    let map = headers(
        "forwarded",
        &[
            "for=1.1.1.1",
            "for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.9;by=10.0.0.1",
        ],
    );
    assert_eq!(
        addrs.client_ip(Some(ip("10.0.0.1")), &map),
        Some(ip("2001:db8:cafe::17"))
    );
    // X-Forwarded-For is not read when the proxies write Forwarded.
    let xff = headers("x-forwarded-for", &["203.0.113.1"]);
    assert_eq!(
        addrs.client_ip(Some(ip("10.0.0.1")), &xff),
        Some(ip("10.0.0.1"))
    );
    // An obfuscated node or an element without `for` stops the walk.
    for bad in ["for=_hidden", "for=unknown", "proto=https"] {
        let line = format!("for=203.0.113.1, {bad}, for=10.0.0.3");
        let map = headers("forwarded", &[&line]);
        assert_eq!(
            addrs.client_ip(Some(ip("10.0.0.1")), &map),
            Some(ip("10.0.0.3")),
            "{bad}"
        );
    }
}

#[test]
fn cidrs_are_validated_with_the_reason() {
    assert_eq!(
        "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        "2001:db8::1".parse::<Cidr>().unwrap().to_string(),
        "2001:db8::1/128"
    );
    assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len, 0);
    let cases = [
        ("10.0.0.0/33", "prefix length that is not 0-32"),
        ("2001:db8::/129", "prefix length that is not 0-128"),
        ("10.0.0.0/x", "prefix length"),
        ("10.1.2.3/8", "host bits set (the network is 10.0.0.0/8)"),
        ("ten.0.0.0/8", "not an IP address or CIDR"),
        ("", "not an IP address or CIDR"),
    ];
    for (text, reason) in cases {
        let error = text.parse::<Cidr>().unwrap_err().to_string();
        assert!(error.contains(reason), "{text}: {error}");
    }
}

#[test]
fn masks_keep_the_network_part() {
    assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
    assert_eq!(
        mask(ip("2001:db8:1:2:3:4:5:6"), 128),
        ip("2001:db8:1:2:3:4:5:6")
    );
    assert_eq!(mask(ip("203.0.113.77"), 24), ip("203.0.113.0"));
    assert_eq!(mask(ip("203.0.113.77"), 0), ip("0.0.0.0"));
    let net: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(net.contains(ip("198.51.100.1")));
    assert!(!net.contains(ip("2001:db8::1")), "families never mix");
}

#[test]
fn cidr_errors_keep_the_parse_error_behind_them() {
    use std::error::Error as _;
    let cause = |text: &str| text.parse::<Cidr>().unwrap_err().source().is_some();
    assert!(cause("ten.0.0.0/8"), "the address's parse error");
    assert!(cause("10.0.0.0/x"), "the length's parse error");
    assert!(!cause("10.0.0.0/33"), "a number, only too long");
    assert!(!cause("10.1.2.3/8"), "host bits: nothing failed to parse");
}
