//! What the end-to-end benchmarks scrape and export to: sidecar addresses (one loopback
//! address each, as pods have), a small HTTP server, and a sink that reads every body and
//! answers as the receivers it stands for would (remote write, OTLP/HTTP and OTLP/gRPC).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Sidecar `i`'s address: 127.x.y.z, so that each target has an `instance` of its own.
pub fn sidecar_addr(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::new(127, 1 + (i / 250) as u8, 0, 1 + (i % 250) as u8),
        port,
    ))
}

/// A static target list of the first `count` sidecars, as a YAML line at `indent`.
pub fn scrape_targets(count: usize, port: u16, indent: &str) -> String {
    let list: Vec<String> = (0..count)
        .map(|i| format!("'{}'", sidecar_addr(i, port)))
        .collect();
    format!("{indent}- targets: [{}]\n", list.join(", "))
}

pub type Response = hyper::Response<BoxBody<Bytes, std::convert::Infallible>>;

/// A whole-body response.
pub fn reply(content_type: &str, body: impl Into<Bytes>) -> Response {
    hyper::Response::builder()
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("response")
}

/// Serves HTTP/1.1 and HTTP/2 without TLS (gRPC) on `listener` with `handler`, one task per
/// connection.
pub fn serve<F, Fut>(listener: tokio::net::TcpListener, handler: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let reply = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(reply.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
}

/// What the sink received.
#[derive(Default)]
pub struct Sink {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

/// A successful gRPC unary answer: an empty message (an empty `ExportMetricsServiceResponse`)
/// in its 5-byte frame, then `grpc-status: 0` in the trailers.
fn grpc_ok() -> Response {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    hyper::Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .expect("response")
}

/// A sink on 127.0.0.1 that reads and counts every body, decodes nothing, and answers OK:
/// an empty remote-write or OTLP/HTTP answer, or a gRPC one. Returns its port.
pub async fn serve_sink(sink: Arc<Sink>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    serve(
        listener,
        move |req: hyper::Request<hyper::body::Incoming>| {
            let sink = sink.clone();
            async move {
                let grpc = req
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                let n = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0);
                sink.requests.fetch_add(1, Ordering::Relaxed);
                sink.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if grpc {
                    grpc_ok()
                } else {
                    reply("application/x-protobuf", Bytes::new())
                }
            }
        },
    );
    port
}
