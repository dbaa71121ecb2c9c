//! Where the agent's endpoint listens and under which URL the server reaches it.
//!
//! The endpoint serves task logs, so it listens only where the server can reach it, not on
//! every interface: on 127.0.0.1 when the server is on loopback, else on the address this
//! machine uses to reach the server (found by connecting a UDP socket, which sends nothing).
//! An explicit `--agent-listen` still wins.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The endpoint's port unless told otherwise.
pub const DEFAULT_PORT: u16 = 8001;

/// `host:port` of a server URL (`http://10.0.0.1:8000/x` → `10.0.0.1:8000`); the port is
/// the scheme's default when the URL names none.
pub fn server_host_port(server_url: &str) -> String {
    let (scheme, rest) = server_url.split_once("://").unwrap_or(("http", server_url));
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match authority.rfind(']') {
        // [v6] or [v6]:port
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port || authority.is_empty() {
        authority.to_string()
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{authority}:{port}")
    }
}

/// The host part of `host:port`, without IPv6 brackets.
fn host_of(host_port: &str) -> &str {
    let host = match host_port.rfind(']') {
        Some(end) => &host_port[..=end],
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Decides where to listen for a server at `host_port`, given the local address this
/// machine uses to reach it (None when no route was found): loopback for a loopback server,
/// else that address; every interface only when no route could be found.
pub fn listen_for(host_port: &str, route_ip: Option<IpAddr>) -> SocketAddr {
    let host = host_of(host_port);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        let ip = host
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        return SocketAddr::new(ip, DEFAULT_PORT);
    }
    let ip = route_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, DEFAULT_PORT)
}

/// The local address this machine uses to reach `host_port` (IO: a connected UDP socket,
/// which sends nothing; a host name is resolved).
pub fn route_ip(host_port: &str) -> Option<IpAddr> {
    let target = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()?
        .next()?;
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse().ok()?
    } else {
        "0.0.0.0:0".parse().ok()?
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The default listen address for a server at `server_url` (see [`listen_for`]).
pub fn default_listen(server_url: &str) -> SocketAddr {
    let host_port = server_host_port(server_url);
    let probe = listen_for(&host_port, None);
    if probe.ip().is_loopback() {
        return probe;
    }
    listen_for(&host_port, route_ip(&host_port))
}

/// The endpoint URL for `addr` under `scheme` (`http`, or `https` when the endpoint serves
/// TLS); an unspecified IP is replaced by the local address used to reach the server
/// (127.0.0.1 when none is found).
pub fn advertised(scheme: &str, addr: SocketAddr, server_url: &str) -> String {
    if !addr.ip().is_unspecified() {
        return format!("{scheme}://{addr}");
    }
    let ip = route_ip(&server_host_port(server_url)).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_server_urls() {
        assert_eq!(server_host_port("http://10.0.0.1:8000"), "10.0.0.1:8000");
        assert_eq!(
            server_host_port("http://10.0.0.1:8000/x/y"),
            "10.0.0.1:8000"
        );
        assert_eq!(server_host_port("10.0.0.1:8000"), "10.0.0.1:8000");
        assert_eq!(server_host_port("http://head"), "head:80");
        assert_eq!(server_host_port("https://head/"), "head:443");
        assert_eq!(server_host_port("http://[::1]:8000"), "[::1]:8000");
        assert_eq!(server_host_port("http://[::1]"), "[::1]:80");
    }

    #[test]
    fn loopback_servers_get_a_loopback_endpoint() {
        let route = Some("10.1.2.3".parse().unwrap());
        let listen = |hp: &str, route| listen_for(hp, route).to_string();
        assert_eq!(listen("127.0.0.1:8000", route), "127.0.0.1:8001");
        assert_eq!(listen("127.0.0.5:8000", None), "127.0.0.5:8001");
        assert_eq!(listen("localhost:8000", route), "127.0.0.1:8001");
        assert_eq!(listen("[::1]:8000", route), "[::1]:8001");
        assert_eq!(listen("10.0.0.1:8000", route), "10.1.2.3:8001");
        assert_eq!(listen("head:8000", route), "10.1.2.3:8001");
        // No route to the server: every interface, as before (the endpoint is closed by
        // the agent secret all the same).
        assert_eq!(listen("head:8000", None), "0.0.0.0:8001");
    }

    #[test]
    fn the_default_on_this_machine() {
        assert_eq!(
            default_listen("http://127.0.0.1:8000").to_string(),
            "127.0.0.1:8001"
        );
        // A non-loopback server: the address that reaches it, or every interface on a
        // machine with no route at all.
        let expected = route_ip("192.0.2.1:8000").unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            default_listen("http://192.0.2.1:8000"),
            SocketAddr::new(expected, DEFAULT_PORT)
        );
    }

    #[test]
    fn advertised_keeps_a_specific_address() {
        let addr: SocketAddr = "10.0.0.7:8001".parse().unwrap();
        assert_eq!(
            advertised("http", addr, "http://10.0.0.1:8000"),
            "http://10.0.0.7:8001"
        );
        assert_eq!(
            advertised("https", addr, "https://10.0.0.1:8000"),
            "https://10.0.0.7:8001"
        );
        let any: SocketAddr = "0.0.0.0:9".parse().unwrap();
        assert_eq!(
            advertised("http", any, "http://127.0.0.1:8000"),
            "http://127.0.0.1:9"
        );
    }
}
