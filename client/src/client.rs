//! The connection to one API server: URL building, sending, and mapping answers to errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use kohakuriver_api::{API_PREFIX, Resource, ServerInfo, Task};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

use crate::api::Api;
use crate::error::{Error, answered_not_http, from_error_body, tls_reason};
use crate::params::LogParams;

/// How to talk to a server beyond its URL: the credential and, for `https://`, the CA.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer <token>` on every request.
    pub token: Option<String>,
    /// PEM of the CA that signed the server's certificate (`--ca`, `KOHAKURIVER_CA`); without
    /// it, an `https://` server is checked against the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// How long a request may take, answer included (default [`DEFAULT_REQUEST_TIMEOUT`],
    /// 30 s). Watches and log reads are streams and have none: a watch ends when no byte
    /// (the server sends a bookmark at least every 30 s) came for 90 s, and a log read,
    /// which may rightly stay quiet for hours, relies on TCP keepalive to notice a dead
    /// server.
    pub request_timeout: Option<Duration>,
}

/// How long a request may take when [`ClientOptions::request_timeout`] is not set.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest single wait a 429's `Retry-After` makes the client take before it tries again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// How long in all the client waits out 429s for one request before it gives the 429 to
/// its caller.
const MAX_THROTTLED: Duration = Duration::from_secs(60);

/// A handle on one KohakuRiver API server. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// As given (without a trailing slash), for messages.
    base: String,
    /// The API group root: `{base}/apis/kohakuriver/v1`.
    root: Url,
    http: reqwest::Client,
    /// Whether requests carry a credential.
    has_token: bool,
    /// Every request but a stream's must be answered within this long.
    request_timeout: Duration,
}

impl Client {
    /// A client for the server at `base_url`, e.g. `http://127.0.0.1:8000`. A trailing slash
    /// is fine; a bare `host:port` is taken as `http://host:port`.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::with_options(base_url, ClientOptions::default())
    }

    /// A client for the server at `base_url` with a credential and TLS settings. An
    /// `https://` URL (or a CA in the options) makes a rustls client trusting that CA, or the
    /// system's roots without one. A token written `TOKEN@sha256:HEX` is sent as `TOKEN`.
    pub fn with_options(base_url: &str, options: ClientOptions) -> Result<Client, Error> {
        let parsed = parse_base_url(base_url)?;
        let base = parsed.as_str().trim_end_matches('/').to_string();
        let invalid = |reason: String| Error::InvalidUrl {
            url: base_url.to_string(),
            reason,
        };
        let root =
            Url::parse(&format!("{base}{API_PREFIX}")).map_err(|e| invalid(e.to_string()))?;
        // No overall timeout: watches and followed logs stay open for hours. Each request
        // gets its own (`request`); dead peers of streams are found by TCP keepalive and,
        // for watches, by the bookmark idle check.
        let mut headers = reqwest::header::HeaderMap::new();
        let token = match options.token.as_deref() {
            Some(credential) => Some(kohakuriver_tls::split_credential(credential)?.0),
            None => None,
        };
        if let Some(token) = token.as_deref().filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::InvalidToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        // With a CA, rustls trusts only it; without, the platform's roots (for https://).
        let http = kohakuriver_tls::http_client_builder(options.ca_pem.as_deref())?
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Duration::from_secs(30))
            // The server names this client's field manager after it (`kohakuriver`).
            .user_agent(concat!("kohakuriver/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                base,
                root,
                http,
                has_token: token.is_some_and(|t| !t.is_empty()),
                request_timeout: options.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            }),
        })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// True when requests carry a credential.
    pub fn has_token(&self) -> bool {
        self.inner.has_token
    }

    /// True when this client would send its token in the clear to another machine:
    /// `http://`, a token, and a host that is not loopback. See [`plaintext_token_risk`].
    pub fn plaintext_token_risk(&self) -> bool {
        plaintext_token_risk(&self.inner.base, self.inner.has_token)
    }

    /// The typed API of one kind: `client.api::<Task>()`.
    pub fn api<R: Resource>(&self) -> Api<R> {
        Api::new(self.clone())
    }

    /// What the server says about itself (`GET /info`).
    pub async fn info(&self) -> Result<ServerInfo, Error> {
        let url = self.url(&["info"]);
        self.request_json(self.request(Method::GET, url)).await
    }

    /// The server's CA (`GET /cacerts`, PEM), or `None` when it has none (404).
    pub async fn cacerts(&self) -> Result<Option<Vec<u8>>, Error> {
        let url = format!("{}/cacerts", self.inner.base.trim_end_matches('/'));
        let url = Url::parse(&url).map_err(|e| Error::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        match self.send(self.request(Method::GET, url)).await {
            Ok(resp) => Ok(Some(
                resp.bytes()
                    .await
                    .map_err(|e| self.map_send_error(e))?
                    .to_vec(),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A task's captured output, as raw bytes. With `follow`, the stream stays open until the
    /// task's container exits.
    pub async fn task_log(
        &self,
        name: &str,
        params: &LogParams,
    ) -> Result<BoxStream<'static, Result<Bytes, Error>>, Error> {
        let url = self.url(&[Task::PLURAL, name, "log"]);
        let resp = self
            .send(self.stream_request(Method::GET, url).query(&params.query()))
            .await?;
        Ok(resp.bytes_stream().map_err(Error::Http).boxed())
    }

    /// A consistent copy of the server's whole store (`GET /backup`, admin), an SQLite file,
    /// as a byte stream: no overall timeout, since a large store takes a while.
    pub async fn backup(&self) -> Result<BoxStream<'static, Result<Bytes, Error>>, Error> {
        let url = self.url(&["backup"]);
        let resp = self.send(self.stream_request(Method::GET, url)).await?;
        Ok(resp.bytes_stream().map_err(Error::Http).boxed())
    }

    /// `{root}/{segments…}`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.root.clone();
        url.path_segments_mut()
            .expect("an http URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// A request builder on the shared pool, answered within the request timeout.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.inner
            .http
            .request(method, url)
            .timeout(self.inner.request_timeout)
    }

    /// A request whose answer is a stream (a watch, a log): no overall timeout.
    pub(crate) fn stream_request(&self, method: Method, url: Url) -> RequestBuilder {
        self.inner.http.request(method, url)
    }

    /// Sends a request; a non-2xx answer becomes an error. A 429 (a server limit) is
    /// waited out as its `Retry-After` says and sent again, for up to a minute in all,
    /// since a refused request did nothing.
    pub(crate) async fn send(&self, req: RequestBuilder) -> Result<Response, Error> {
        let mut req = req;
        let mut throttled = Duration::ZERO;
        loop {
            let again = req.try_clone();
            let resp = req.send().await.map_err(|e| self.map_send_error(e))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                && let Some(again) = again
            {
                let wait = retry_after(resp.headers()).min(MAX_RETRY_AFTER);
                if throttled + wait <= MAX_THROTTLED {
                    tracing::debug!(wait = ?wait, "throttled by the server; waiting");
                    tokio::time::sleep(wait).await;
                    throttled += wait;
                    req = again;
                    continue;
                }
            }
            let body = resp.bytes().await.map_err(|e| self.map_send_error(e))?;
            return Err(from_error_body(status.as_u16(), &body));
        }
    }

    /// Sends a request and reads a JSON answer.
    pub(crate) async fn request_json<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
    ) -> Result<T, Error> {
        let resp = self.send(req).await?;
        let body = resp.bytes().await.map_err(|e| self.map_send_error(e))?;
        decode(&body)
    }

    fn map_send_error(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout(self.inner.request_timeout)
        } else if let Some(reason) = tls_reason(&e) {
            Error::Tls {
                url: self.inner.base.clone(),
                reason,
                source: e,
            }
        } else if self.inner.root.scheme() == "http" && answered_not_http(&e) {
            Error::Tls {
                url: self.inner.base.clone(),
                reason: "it did not answer in plain HTTP; is it serving https://? use an https:// URL (with --ca)".to_string(),
                source: e,
            }
        } else if e.is_connect() {
            Error::Connect {
                url: self.inner.base.clone(),
                source: e,
            }
        } else {
            Error::Http(e)
        }
    }
}

/// A 429's `Retry-After` in seconds (at least one second; one when absent or unreadable).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let seconds = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.max(1))
}

/// Parses a server URL: `http://` or `https://`, a host, no query; a bare `host:port` is
/// taken as `http://host:port`.
fn parse_base_url(base_url: &str) -> Result<Url, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: base_url.to_string(),
        reason,
    };
    let given = base_url.trim();
    let with_scheme = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    let parsed = Url::parse(&with_scheme).map_err(|e| invalid(e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(invalid(format!(
            "scheme {:?} is not supported; use http:// or https://",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_string()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            "a server URL takes no query or fragment".to_string(),
        ));
    }
    Ok(parsed)
}

/// True when a request to `url` carrying a token (`has_token`) would cross the network in
/// the clear: the scheme is `http`, and the host is not loopback (`localhost`, 127.0.0.0/8,
/// `::1`). An unparsable URL is no risk: it is never sent to.
pub fn plaintext_token_risk(url: &str, has_token: bool) -> bool {
    let Ok(parsed) = parse_base_url(url) else {
        return false;
    };
    if !has_token || parsed.scheme() != "http" {
        return false;
    }
    match parsed.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name != "localhost" && !name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        None => false,
    }
}

/// Fetches the server's CA (`GET {base_url}/cacerts`) without verifying the connection, and
/// keeps it only if its SHA-256 is `fingerprint` (lowercase hex, from a credential written
/// `TOKEN@sha256:HEX`). This is how a node's first contact is verified without a CA file:
/// whoever answers, only the pinned CA is accepted, and from then on the server is verified
/// with it.
pub async fn fetch_pinned_ca(base_url: &str, fingerprint: &str) -> Result<Vec<u8>, Error> {
    let parsed = parse_base_url(base_url)?;
    let base = parsed.as_str().trim_end_matches('/').to_string();
    let http = kohakuriver_tls::http_client_builder(None)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured(kohakuriver_tls::unverified_client_config()?)
        .build()
        .map_err(|e| Error::InvalidUrl {
            url: base_url.to_string(),
            reason: e.to_string(),
        })?;
    let map_err = |e: reqwest::Error| {
        if e.is_connect() {
            Error::Connect {
                url: base.clone(),
                source: e,
            }
        } else {
            Error::Http(e)
        }
    };
    let resp = http
        .get(format!("{base}/cacerts"))
        .send()
        .await
        .map_err(map_err)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(map_err)?;
    if !status.is_success() {
        return Err(from_error_body(status.as_u16(), &body));
    }
    kohakuriver_tls::check_pinned(&body, fingerprint)?;
    Ok(body.to_vec())
}

/// Reads a whole JSON body, naming the field path when it does not fit `T`.
pub(crate) async fn read_json<T: DeserializeOwned>(resp: Response) -> Result<T, Error> {
    let body = resp.bytes().await.map_err(Error::Http)?;
    decode(&body)
}

/// Parses JSON into `T`, naming the field path on error.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    kohakuriver_api::manifest::from_json(body).map_err(Error::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::Node;

    #[test]
    fn urls() {
        let c = Client::new("http://127.0.0.1:8000/").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8000");
        assert_eq!(
            c.url(&[Task::PLURAL]).as_str(),
            "http://127.0.0.1:8000/apis/kohakuriver/v1/tasks"
        );
        assert_eq!(
            c.url(&[Node::PLURAL, "n1", "status"]).as_str(),
            "http://127.0.0.1:8000/apis/kohakuriver/v1/nodes/n1/status"
        );
        // Names are percent-encoded, so a odd name cannot escape its path segment.
        assert_eq!(
            c.url(&[Task::PLURAL, "a/b?c"]).as_str(),
            "http://127.0.0.1:8000/apis/kohakuriver/v1/tasks/a%2Fb%3Fc"
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            Client::new("localhost:9000").unwrap().base_url(),
            "http://localhost:9000"
        );
        let c = Client::new("http://example.com/prefix/").unwrap();
        assert_eq!(
            c.url(&["info"]).as_str(),
            "http://example.com/prefix/apis/kohakuriver/v1/info"
        );
        assert_eq!(
            Client::new("https://h:8443/").unwrap().base_url(),
            "https://h:8443"
        );
        for bad in ["ftp://x", "http://", "http://x/?q=1"] {
            let err = Client::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn plaintext_token_risks() {
        let check = |url, token, want| assert_eq!(plaintext_token_risk(url, token), want, "{url}");
        check("http://10.0.0.1:8000", true, true);
        check("http://head.example:8000", true, true);
        check("head:8000", true, true);
        check("http://10.0.0.1:8000", false, false);
        check("https://10.0.0.1:8000", true, false);
        check("http://127.0.0.1:8000", true, false);
        check("http://127.1.2.3:8000", true, false);
        check("http://localhost:8000", true, false);
        check("http://LOCALHOST.:8000", true, false);
        check("http://[::1]:8000", true, false);
        check("http://[fe80::1]:8000", true, true);
        check("ftp://x", true, false);
    }

    #[test]
    fn pinned_credentials_send_only_the_token() {
        let pin = "ab".repeat(32);
        let c = Client::with_options(
            "http://127.0.0.1:1",
            ClientOptions {
                token: Some(format!("krv_x@sha256:{pin}")),
                ca_pem: None,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(c.has_token());
        let err = Client::with_options(
            "http://127.0.0.1:1",
            ClientOptions {
                token: Some("krv_x@sha256:zz".to_string()),
                ca_pem: None,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
