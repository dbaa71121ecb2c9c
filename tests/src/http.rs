//! A minimal blocking HTTP/1.0 GET, enough to poll `/healthz` and read objects as JSON
//! without an async runtime in the harness.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `GET url` (`http://host:port/path`), with a 10 s timeout. Errors are connection errors
/// or a malformed answer.
pub fn http_get(url: &str) -> std::io::Result<HttpResponse> {
    http_get_with(url, None, None)
}

/// [`http_get`] with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_auth(url: &str, token: Option<&str>) -> std::io::Result<HttpResponse> {
    http_get_with(url, None, token)
}

/// `GET url` (`https://host:port/path`) trusting only the CA in `ca_pem`; otherwise as
/// [`http_get`].
pub fn https_get(url: &str, ca_pem: &[u8]) -> std::io::Result<HttpResponse> {
    http_get_with(url, Some(ca_pem), None)
}

/// `GET url`: over https trusting only `ca_pem` when it is given, else over http; with
/// `Authorization: Bearer <token>` when a token is given.
pub fn http_get_with(
    url: &str,
    ca_pem: Option<&[u8]>,
    token: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let scheme = if ca_pem.is_some() {
        "https://"
    } else {
        "http://"
    };
    let rest = url
        .strip_prefix(scheme)
        .ok_or_else(|| std::io::Error::other(format!("not an {scheme} url: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("cannot resolve {host}")))?;
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    match ca_pem {
        None => {
            tcp.write_all(request.as_bytes())?;
            tcp.read_to_end(&mut raw)?;
        }
        Some(ca_pem) => {
            let config =
                kohakuriver_tls::client_config(Some(ca_pem)).map_err(std::io::Error::other)?;
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let name = name.trim_start_matches('[').trim_end_matches(']');
            let server_name =
                kohakuriver_tls::rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(std::io::Error::other)?;
            let connection = kohakuriver_tls::rustls::ClientConnection::new(
                std::sync::Arc::new(config),
                server_name,
            )
            .map_err(std::io::Error::other)?;
            let mut tls = kohakuriver_tls::rustls::StreamOwned::new(connection, tcp);
            tls.write_all(request.as_bytes())?;
            match tls.read_to_end(&mut raw) {
                // A server that closes without close_notify after a whole answer is fine here.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                other => {
                    other?;
                }
            }
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse { status, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}
