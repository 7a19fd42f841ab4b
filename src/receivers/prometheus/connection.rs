//! A target's HTTP/1.1 connection, kept alive between scrapes without hyper's read buffer.
//!
//! A pooled hyper client keeps each idle connection together with the read buffer its last
//! response grew, and a scraper has one connection per target: 100 sidecars held 10.6 MB of
//! buffers that were only read once per interval. Here each scrape runs a fresh hyper
//! connection over the target's kept TCP (or TLS) stream and takes the bare stream back when
//! the response is complete, so the buffer lives only while a body is read, and can be
//! large enough for few reads.
//!
//! Like Go's transport (what Prometheus uses), a request that fails on a reused connection
//! before any response arrived (the target closed it while idle) is sent again once on a new
//! one: a scrape is a GET.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::config::ResolvedScrapeConfig;
use super::target::Target;

/// Opens TCP or TLS streams to targets; shared by the targets of one scrape config.
pub type Connector = HttpsConnector<HttpConnector>;

type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

type Finished = hyper::Result<http1::Parts<Stream>>;

/// Largest read from the socket. The buffer exists only during a scrape, so it can be four
/// times what a kept connection could afford: a 1.5 MB sidecar body takes 8 `recvfrom`
/// calls instead of 21 (strace, 200 scrapes), each a turn of hyper's connection and a frame.
const MAX_READ: usize = 256 << 10;

/// Builds the connector for the targets of one scrape config (its TLS settings).
pub fn connector(cfg: &ResolvedScrapeConfig) -> Result<Connector, String> {
    let tls = cfg.tls.rustls_config()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.timeout));
    // TCP keep-alive probes find a kept stream whose peer vanished while it sat idle; 30 s
    // is what Prometheus's dialer uses.
    http.set_keepalive(Some(Duration::from_secs(30)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// One target's connection: its stream while idle between scrapes.
#[derive(Default)]
pub struct Connection {
    idle: Option<Stream>,
}

/// A request under way: hyper's connection future, which moves the response's bytes and
/// must be polled while the body is read (`drive`), then gives the stream back.
pub struct Exchange {
    conn: Option<Pin<Box<dyn Future<Output = Finished> + Send>>>,
    finished: Option<Finished>,
    /// Kept until the body is read: dropping it is what lets the connection finish.
    sender: Option<http1::SendRequest<Empty<Bytes>>>,
    keep_alive: bool,
}

impl Connection {
    /// Sends a GET for `uri` with `headers` (a `Host` header is added); returns the response
    /// head and the exchange its body is read through.
    pub async fn get(
        &mut self,
        connector: &Connector,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(Response<Incoming>, Exchange), String> {
        if let Some(stream) = self.idle.take() {
            // Any failure before a response on a kept stream: the target may have closed it
            // while idle, so it gets one more try on a new stream.
            if let Ok(sent) = send(stream, uri, headers).await {
                return Ok(sent);
            }
        }
        let stream = connect(connector, uri).await?;
        send(stream, uri, headers)
            .await
            .map_err(|e| error_chain(&e))
    }

    /// As `get`, following up to [`MAX_REDIRECTS`] redirects when `follow` is set, as Go's
    /// client does for Prometheus: the `Location` is resolved against the URL asked, and
    /// the `Authorization` header goes only to the same host or its subdomains. Redirected
    /// requests use connections of their own, never kept: the target's kept stream is for
    /// its own host.
    pub async fn get_following(
        &mut self,
        connector: &Connector,
        uri: &Uri,
        headers: &HeaderMap,
        follow: bool,
    ) -> Result<(Response<Incoming>, Exchange), String> {
        let (mut response, mut exchange) = self.get(connector, uri, headers).await?;
        // The common case, an answer: nothing is copied for it.
        if !follow || redirect_target(uri, &response).is_none() {
            return Ok((response, exchange));
        }
        let mut at = uri.clone();
        let mut headers = headers.clone();
        for _ in 0..MAX_REDIRECTS {
            let Some(next) = redirect_target(&at, &response) else {
                return Ok((response, exchange));
            };
            // The redirect's own body is not read: its stream closes with it.
            drop(exchange);
            if !same_or_subdomain(&next, uri) {
                headers.remove(http::header::AUTHORIZATION);
            }
            let stream = connect(connector, &next).await?;
            (response, exchange) = send(stream, &next, &headers)
                .await
                .map_err(|e| error_chain(&e))?;
            exchange.keep_alive = false;
            at = next;
        }
        if redirect_target(&at, &response).is_some() {
            return Err(format!("stopped after {MAX_REDIRECTS} redirects"));
        }
        Ok((response, exchange))
    }

    /// After the whole body was read: keeps the stream for the next scrape when the
    /// response allows it. Dropping an exchange instead closes its stream.
    pub async fn finish(&mut self, mut exchange: Exchange) {
        exchange.sender = None;
        let keep_alive = exchange.keep_alive;
        if let Some(Ok(parts)) = exchange.finish().await {
            // Bytes past the response would be read as the next one's start.
            if keep_alive && parts.read_buf.is_empty() {
                self.idle = Some(parts.io);
            }
        }
    }
}

impl Exchange {
    /// Runs `work` (reading the body) while polling the connection, in this task.
    pub async fn drive<W: Future>(&mut self, work: W) -> W::Output {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| loop {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            match self.conn.as_mut().map(|c| c.as_mut().poll(cx)) {
                // The connection ended (an error, or the stream closed): `work` sees it now.
                Some(Poll::Ready(done)) => {
                    self.conn = None;
                    self.finished = Some(done);
                }
                Some(Poll::Pending) | None => return Poll::Pending,
            }
        })
        .await
    }

    async fn finish(&mut self) -> Option<Finished> {
        if let Some(conn) = self.conn.take() {
            self.finished = Some(conn.await);
        }
        self.finished.take()
    }
}

async fn connect(connector: &Connector, uri: &Uri) -> Result<Stream, String> {
    let mut connector = connector.clone();
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|e| format!("connect: {}", error_chain(&*e)))?;
    connector
        .call(uri.clone())
        .await
        .map_err(|e| format!("connect: {}", error_chain(&*e)))
}

async fn send(
    stream: Stream,
    uri: &Uri,
    headers: &HeaderMap,
) -> hyper::Result<(Response<Incoming>, Exchange)> {
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(MAX_READ)
        .handshake::<_, Empty<Bytes>>(stream)
        .await?;
    let mut sender = sender;
    let mut exchange = Exchange {
        conn: Some(Box::pin(conn.without_shutdown())),
        finished: None,
        sender: None,
        keep_alive: false,
    };
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = origin_form(uri);
    *req.headers_mut() = headers.clone();
    if let Some(host) = host_header(uri) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let response = exchange.drive(sender.send_request(req)).await?;
    exchange.sender = Some(sender);
    exchange.keep_alive = keeps_alive(&response);
    Ok((response, exchange))
}

/// Redirects followed per scrape, as Go's HTTP client.
pub const MAX_REDIRECTS: usize = 10;

/// Where a redirect response sends the request next, if it is one Go's client follows.
fn redirect_target(base: &Uri, response: &Response<Incoming>) -> Option<Uri> {
    use http::StatusCode as S;
    if !matches!(
        response.status(),
        S::MOVED_PERMANENTLY
            | S::FOUND
            | S::SEE_OTHER
            | S::TEMPORARY_REDIRECT
            | S::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = response
        .headers()
        .get(http::header::LOCATION)?
        .to_str()
        .ok()?;
    resolve(base, location)
}

/// `location` resolved against `base` (absolute, scheme-relative, absolute-path or relative).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let joined = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = joined.parse().ok()?;
    uri.host()?;
    Some(uri)
}

/// Go's rule for forwarding credentials on a redirect: to the same host name (any port), or
/// a subdomain of it.
fn same_or_subdomain(dest: &Uri, initial: &Uri) -> bool {
    let (Some(d), Some(i)) = (dest.host(), initial.host()) else {
        return false;
    };
    let (d, i) = (d.to_ascii_lowercase(), i.to_ascii_lowercase());
    d == i || d.strip_suffix(&i).is_some_and(|head| head.ends_with('.'))
}

/// The request target: path and query only (the host goes in `Host`).
fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// `Host` as Go's client writes it: the URL's host and port as given, without user info.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    HeaderValue::from_str(host).ok()
}

/// Whether the connection may carry another request after this response.
fn keeps_alive(response: &Response<Incoming>) -> bool {
    let has = |token: &str| {
        response
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match response.version() {
        Version::HTTP_11 => !has("close"),
        Version::HTTP_10 => has("keep-alive"),
        _ => false,
    }
}

/// A gzip body is joined and inflated into buffers lent per scrape from a small
/// process-wide pool instead of kept by every target (an inflated sidecar body is ~1.5 MB):
/// memory follows concurrent scrapes, not the number of targets.
static BODY_BUFFERS: BufferPool = BufferPool::new();
/// Spare buffers kept, and the largest capacity worth keeping (one huge body must not pin
/// its size forever).
const POOLED_BUFFERS: usize = 4;
const POOLED_CAPACITY: usize = 16 << 20;

pub(super) fn take_buffer() -> Vec<u8> {
    BODY_BUFFERS.take()
}

pub(super) fn give_buffer(buf: Vec<u8>) {
    BODY_BUFFERS.give(buf)
}

struct BufferPool {
    spare: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    const fn new() -> Self {
        BufferPool {
            spare: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Vec<u8> {
        self.spare
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default()
    }

    /// Keeps a buffer, at most twice the size of the body it last held: a buffer follows
    /// the bodies it is lent for, so when bodies shrink or go empty (targets falling
    /// silent) the pool does not keep the large ones resident.
    fn give(&self, mut buf: Vec<u8>) {
        buf.shrink_to(buf.len().saturating_mul(2));
        if buf.capacity() == 0 || buf.capacity() > POOLED_CAPACITY {
            return;
        }
        buf.clear();
        if let Ok(mut pool) = self.spare.lock() {
            if pool.len() < POOLED_BUFFERS {
                pool.push(buf);
            }
        }
    }
}

/// A body as it was received: hyper's frames, kept (not copied) for the parser to read in
/// place. Frames under `SMALL_FRAME` are joined: a target sending its body a few bytes at a
/// time would otherwise cost a frame's bookkeeping (32 bytes) every few bytes.
#[derive(Default)]
pub(super) struct BodyFrames {
    frames: Vec<Bytes>,
    small: Vec<u8>,
    received: usize,
}

const SMALL_FRAME: usize = 8 << 10;

impl BodyFrames {
    pub fn clear(&mut self) {
        self.frames.clear();
        self.small = Vec::new();
        self.received = 0;
    }

    pub fn push(&mut self, data: Bytes) {
        self.received += data.len();
        if data.len() >= SMALL_FRAME {
            self.flush_small();
            self.frames.push(data);
        } else {
            self.small.extend_from_slice(&data);
            if self.small.len() >= SMALL_FRAME {
                self.flush_small();
            }
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.frames
                .push(Bytes::from(std::mem::take(&mut self.small)));
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Every frame, in order, once the body is whole.
    pub fn finish(&mut self) -> &[Bytes] {
        self.flush_small();
        &self.frames
    }
}

/// A target's scrape request: its URI and headers. Both follow from the scrape config and
/// the target alone, which a loop keeps for its life (a changed config starts new loops), so
/// they are built once; an error fails each scrape with its reason.
pub(super) fn scrape_request(
    cfg: &ResolvedScrapeConfig,
    target: &Target,
) -> Result<(http::Uri, HeaderMap), String> {
    let accept = if cfg.openmetrics {
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    } else {
        "text/plain;version=0.0.4;q=1,*/*;q=0.1"
    };
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(http::header::ACCEPT, HeaderValue::from_static(accept));
    headers.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static(if cfg.enable_compression {
            "gzip"
        } else {
            "identity"
        }),
    );
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("meshmetrics/", env!("CARGO_PKG_VERSION"))),
    );
    let timeout = format!("{}", target.timeout.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&timeout) {
        headers.insert("X-Prometheus-Scrape-Timeout-Seconds", v);
    }
    let authorization = if let Some((kind, cred)) = &cfg.authorization {
        Some(format!("{kind} {}", cred.expose()))
    } else if let Some((user, pw)) = &cfg.basic_auth {
        use base64::Engine;
        let pair = format!("{user}:{}", pw.expose());
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    } else {
        None
    };
    if let Some(a) = authorization {
        let mut v = HeaderValue::from_str(&a)
            .map_err(|_| "credentials are not a valid header value".to_string())?;
        v.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let uri: http::Uri = target
        .url
        .parse()
        .map_err(|e| format!("invalid request: {e}"))?;
    Ok((uri, headers))
}

/// An error and its sources, each once, as one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body sent a byte at a time is held in few frames; large frames are kept as they
    /// came, and the frames read back as the body, in order.
    #[test]
    fn small_frames_are_joined_and_large_ones_kept() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut frames = BodyFrames::default();
        for b in &body[..50_000] {
            frames.push(Bytes::copy_from_slice(std::slice::from_ref(b)));
        }
        let large = Bytes::copy_from_slice(&body[50_000..90_000]);
        frames.push(large.clone());
        frames.push(Bytes::copy_from_slice(&body[90_000..]));
        assert_eq!(frames.received(), body.len());
        let held = frames.finish();
        assert!(
            held.len() <= 50_000 / SMALL_FRAME + 3,
            "{} frames",
            held.len()
        );
        assert!(held.iter().any(|f| f.as_ptr() == large.as_ptr()), "copied");
        assert_eq!(held.concat(), body);
        frames.clear();
        assert!(frames.finish().is_empty() && frames.received() == 0);
    }

    #[test]
    fn pooled_buffers_follow_the_bodies_they_held() {
        let pool = BufferPool::new();
        let held = |len: usize, cap: usize| {
            let mut b = Vec::with_capacity(cap);
            b.resize(len, b'x');
            b
        };
        // A body that filled its buffer keeps it whole.
        pool.give(held(1500, 1500));
        let b = pool.take();
        assert!(b.is_empty() && b.capacity() == 1500, "{}", b.capacity());
        // One that held a tenth of it gives most of it back.
        pool.give(held(100, 1 << 20));
        let b = pool.take();
        assert!(
            b.is_empty() && (200..4096).contains(&b.capacity()),
            "{}",
            b.capacity()
        );
        // An empty body (a target gone silent) keeps nothing.
        pool.give(held(0, 1 << 20));
        assert_eq!(pool.take().capacity(), 0);
        // At most `POOLED_BUFFERS` are kept, and none over `POOLED_CAPACITY`.
        for _ in 0..POOLED_BUFFERS + 2 {
            pool.give(held(10, 10));
        }
        pool.give(held(POOLED_CAPACITY + 1, POOLED_CAPACITY + 1));
        let kept: Vec<_> = std::iter::from_fn(|| Some(pool.take()))
            .take_while(|b| b.capacity() > 0)
            .collect();
        assert_eq!(kept.len(), POOLED_BUFFERS);
    }

    #[test]
    fn request_target_and_host() {
        let uri: Uri = "http://user:pw@127.0.0.1:9090/metrics?x=1"
            .parse()
            .expect("uri");
        assert_eq!(origin_form(&uri), "/metrics?x=1");
        assert_eq!(host_header(&uri).expect("host"), "127.0.0.1:9090");
        let uri: Uri = "https://[::1]/".parse().expect("uri");
        assert_eq!(origin_form(&uri), "/");
        assert_eq!(host_header(&uri).expect("host"), "[::1]");
    }

    #[test]
    fn redirect_locations_and_credentials() {
        let base: Uri = "http://10.0.0.1:9090/stats/prometheus?x=1"
            .parse()
            .expect("uri");
        let r = |l: &str| resolve(&base, l).map(|u| u.to_string());
        assert_eq!(
            r("/metrics").as_deref(),
            Some("http://10.0.0.1:9090/metrics")
        );
        assert_eq!(
            r("metrics").as_deref(),
            Some("http://10.0.0.1:9090/stats/metrics")
        );
        assert_eq!(r("//other:1/m").as_deref(), Some("http://other:1/m"));
        assert_eq!(
            r("https://x.example/m").as_deref(),
            Some("https://x.example/m")
        );
        let u = |s: &str| s.parse::<Uri>().expect("uri");
        assert!(same_or_subdomain(
            &u("http://a.example:1/"),
            &u("http://a.example:2/")
        ));
        assert!(same_or_subdomain(
            &u("http://m.a.example/"),
            &u("http://a.example/")
        ));
        assert!(!same_or_subdomain(
            &u("http://evil-a.example/"),
            &u("http://a.example/")
        ));
        assert!(!same_or_subdomain(
            &u("http://localhost/"),
            &u("http://127.0.0.1/")
        ));
    }
}
