//! Listen addresses: how they are written in a config, which ones a config takes, and when
//! two of them clash.

use std::net::SocketAddr;

use super::{ComponentId, Config, ExporterConfig, ExtensionConfig, ReceiverConfig};

/// Whether two listen addresses take the same port: the same port on the same address, or on
/// any address when either is the unspecified one. Port 0 (any free port) takes none.
pub fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Config {
    /// Every address the running config listens on, named by what listens: the receivers
    /// and exporters of its pipelines, its extensions and its self metrics.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        let mut add = |name: String, addr: &str| {
            if let Ok(a) = parse_listen_address(addr) {
                out.push((name, a));
            }
        };
        let mut receivers: Vec<&ComponentId> =
            self.pipelines.iter().flat_map(|p| &p.receivers).collect();
        receivers.sort_by_key(|id| id.to_string());
        receivers.dedup();
        for id in receivers {
            if let Some(ReceiverConfig::Otlp(o)) = self.raw.receivers.get(id) {
                if let Some(g) = &o.protocols.grpc {
                    add(format!("receivers::{id} (grpc)"), &g.endpoint);
                }
                if let Some(h) = &o.protocols.http {
                    add(format!("receivers::{id} (http)"), &h.endpoint);
                }
            }
        }
        let mut exporters: Vec<&ComponentId> =
            self.pipelines.iter().flat_map(|p| &p.exporters).collect();
        exporters.sort_by_key(|id| id.to_string());
        exporters.dedup();
        for id in exporters {
            if let Some(ExporterConfig::Promql(p)) = self.raw.exporters.get(id) {
                add(format!("exporters::{id}"), &p.endpoint);
            }
        }
        for id in &self.extensions {
            match self.raw.extensions.get(id) {
                Some(ExtensionConfig::HealthCheck(h)) => {
                    add(format!("extensions::{id}"), &h.endpoint)
                }
                Some(ExtensionConfig::Zpages(z)) => add(format!("extensions::{id}"), &z.endpoint),
                _ => {}
            }
        }
        if let Ok(Some(a)) = self.raw.service.telemetry.metrics.listen_address() {
            out.push(("service.telemetry.metrics".into(), a));
        }
        out
    }
}

/// Parses `host:port`, `:port` (all interfaces) or `localhost:port`.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_host = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else if let Some(rest) = s.strip_prefix("localhost:") {
        format!("127.0.0.1:{rest}")
    } else {
        s.to_string()
    };
    with_host
        .parse()
        .map_err(|_| format!("invalid listen address {s:?} (expected host:port)"))
}
