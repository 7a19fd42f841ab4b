//! The one way this agent serves HTTP (query API and peer port, OTLP/HTTP and OTLP/gRPC,
//! health, zpages, self metrics): hyper's HTTP/1 and HTTP/2 connection builder with the
//! bounds a listener facing careless or hostile callers needs. A caller holding thousands
//! of half-sent requests, never reading its answers, or asking faster than anything can
//! answer costs a bounded number of connections and requests, each of them for a bounded
//! time, and every other caller is still served.

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tower_service::Service;

use crate::telemetry::{SharedTelemetry, Telemetry};

/// A listener's bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// Requests being answered at once; more get 503 (gRPC: RESOURCE_EXHAUSTED) at once.
    pub max_requests: usize,
    /// A request head must arrive whole within this, counted from when the connection is
    /// ready for one: also how long an idle HTTP/1 keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// A connection with no byte read or written for this long is closed (an HTTP/2 client
    /// answering keep-alive pings stays).
    pub idle_timeout: Duration,
    /// Most time from a request's head to its answer's head, body read included.
    pub request_timeout: Duration,
    /// Most bytes of a request head (HTTP/1 read buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_requests: 512,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
        }
    }
}

/// A running server: stop it with [`Served::stop`].
pub struct Served {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Stops accepting, asks open connections to finish what they are answering, and waits
    /// for them up to `grace`.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

/// Binds `addr` and serves `router` there with the default limits: every listener a component
/// starts (extensions, the query façade, self metrics); `name` is the server's in logs and
/// refusal counts.
pub async fn listen(
    name: &str,
    addr: SocketAddr,
    router: axum::Router,
    telemetry: &SharedTelemetry,
) -> Result<Served, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let served = serve(
        name,
        listener,
        router,
        Limits::default(),
        Some(telemetry.clone()),
    );
    tracing::info!(server = %name, address = %served.addr, "listening");
    Ok(served)
}

/// Serves `router` on `listener` within `limits`; refusals are counted per server `name`
/// and reason in `meshmetrics_http_server_refused`.
pub fn serve(
    name: &str,
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    telemetry: Option<SharedTelemetry>,
) -> Served {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, mut stop_rx) = oneshot::channel::<()>();
    let shared = Arc::new(Shared {
        name: name.to_string(),
        limits,
        telemetry,
        requests: Semaphore::new(0),
    });
    shared.requests.add_permits(shared.limits.max_requests);
    let task = tokio::spawn(async move {
        let connections = Arc::new(Semaphore::new(shared.limits.max_connections));
        let (closing, closing_rx) = watch::channel(false);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(shared.limits.header_read_timeout)
            .max_buf_size(shared.limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(256)
            .max_header_list_size(shared.limits.max_header_bytes as u32);
        let builder = Arc::new(builder);
        loop {
            let accepted = tokio::select! {
                _ = &mut stop_rx => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted:
                    // back off briefly rather than spin.
                    tracing::debug!(server = %shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                shared.refused("connections");
                drop(tcp);
                continue;
            };
            // No Nagle: a peer's gRPC answer spans several frames, and waiting for the
            // client's delayed ACK before the last one costs ~40 ms a query.
            let _ = tcp.set_nodelay(true);
            let conn = Connection {
                shared: shared.clone(),
                builder: builder.clone(),
                router: router.clone(),
                peer,
                closing: closing_rx.clone(),
            };
            tokio::spawn(async move {
                conn.run(tcp).await;
                drop(permit);
            });
        }
        drop(listener);
        let _ = closing.send(true);
        // Wait for the connections to finish their answers (the caller bounds the wait).
        let _ = connections
            .acquire_many(shared.limits.max_connections as u32)
            .await;
    });
    Served { addr, stop, task }
}

struct Shared {
    name: String,
    limits: Limits,
    telemetry: Option<SharedTelemetry>,
    requests: Semaphore,
}

impl Shared {
    fn refused(&self, reason: &str) {
        if let Some(t) = &self.telemetry {
            t.http_refused
                .get_or_create(&Telemetry::labels(&[
                    ("server", &self.name),
                    ("reason", reason),
                ]))
                .inc();
        }
    }
}

struct Connection {
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: axum::Router,
    peer: SocketAddr,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) {
        let limits = &self.shared.limits;
        // Before hyper reads a request head it must know HTTP/1 from HTTP/2, which waits
        // for the first bytes without a timer of its own: a silent connection goes here.
        if tokio::time::timeout(limits.header_read_timeout, tcp.readable())
            .await
            .is_err()
        {
            self.shared.refused("header_timeout");
            return;
        }
        let activity = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let io = TokioIo::new(Watched {
            inner: tcp,
            activity: activity.clone(),
            started,
        });
        let service = RequestService {
            shared: self.shared.clone(),
            router: self.router.clone(),
            peer: self.peer,
        };
        let conn = self.builder.serve_connection_with_upgrades(
            io,
            hyper_util::service::TowerToHyperService::new(service),
        );
        tokio::pin!(conn);
        let idle = limits.idle_timeout;
        let mut check = tokio::time::interval(
            idle.min(Duration::from_secs(5))
                .max(Duration::from_millis(100)),
        );
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                changed = self.closing.changed(), if !closing => {
                    if changed.is_err() || *self.closing.borrow() {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = check.tick() => {
                    let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                    if started.elapsed().saturating_sub(last) > idle {
                        self.shared.refused("idle_timeout");
                        return;
                    }
                }
            }
        }
    }
}

/// A connection's stream, noting when a byte last went either way.
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    started: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Each request: a turn among the requests in flight, the peer's address for the handlers
/// (`ConnectInfo`), and the request deadline.
#[derive(Clone)]
struct RequestService {
    shared: Arc<Shared>,
    router: axum::Router,
    peer: SocketAddr,
}

impl Service<hyper::Request<Incoming>> for RequestService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let mut router = self.router.clone();
        let peer = self.peer;
        Box::pin(async move {
            let grpc = is_grpc(&req);
            let Ok(_turn) = shared.requests.try_acquire() else {
                shared.refused("requests");
                return Ok(refusal(grpc, "too many requests in flight"));
            };
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let answer = tokio::time::timeout(shared.limits.request_timeout, router.call(req));
            match answer.await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(never)) => match never {},
                Err(_) => {
                    shared.refused("request_timeout");
                    Ok(refusal(
                        grpc,
                        "request not answered within the request timeout",
                    ))
                }
            }
        })
    }
}

fn is_grpc<B>(req: &hyper::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A refusal in the caller's protocol: gRPC's trailers-only RESOURCE_EXHAUSTED, or a 503
/// in Prometheus's JSON error shape (what the query API's clients parse).
fn refusal(grpc: bool, why: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    if grpc {
        let mut r = axum::http::StatusCode::OK.into_response();
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(v) = http::HeaderValue::from_str(why) {
            h.insert("grpc-message", v);
        }
        return r;
    }
    let body = format!(
        "{{\"status\":\"error\",\"errorType\":\"unavailable\",\"error\":{}}}",
        serde_json::to_string(why).unwrap_or_default()
    );
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Text for an HTML page: the characters markup would read, escaped (the operator pages show
/// what callers and targets sent).
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
