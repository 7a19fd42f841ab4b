//! Query fan-out across agents. Every `promql` exporter serves the peer API (`proto/`,
//! gRPC on the façade's own port): raw samples of the series matching a selector in a time
//! window. An exporter with `peers` answers a query by asking every peer for the samples of
//! the query's selectors, merging them with its own, and evaluating on the merged series —
//! the same evaluator, so a DaemonSet of agents answers like one Prometheus holding it all.
//! A peer that does not answer fails the query with its name, unless `partial_response`.

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::config::secret::Secret;
use crate::config::units::de_duration;
use crate::model::{Label, Labels};
use crate::promql::{Compat, LabelMatcher, MatchKind, Queryable, SeriesSamples};
use crate::store::Store;

/// Code generated from `proto/meshmetrics/peer/v1/peer.proto`.
pub mod proto {
    tonic::include_proto!("meshmetrics.peer.v1");
}

use proto::peer_client::PeerClient;
use proto::peer_server::{Peer, PeerServer};

/// `exporters: promql: peers:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeersConfig {
    /// Peers' façade addresses (`host:port`).
    #[serde(default, rename = "static")]
    pub static_peers: Vec<String>,
    /// A name resolved on every query to all its addresses, with the port: in Kubernetes a
    /// headless Service of the agents (`meshmetrics-peers.flagger-system.svc:9090`). Give that
    /// Service `publishNotReadyAddresses: true`, so an agent that is down is asked — and
    /// named in the error — instead of silently missing from the answer.
    #[serde(default)]
    pub dns: Option<String>,
    /// Per-peer deadline, inside the query's own (Flagger gives up after 5 s).
    #[serde(default = "default_peer_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Answer with what the reachable peers have, plus a `warnings` entry per missing one.
    /// Off by default: a canary must not be judged on part of the mesh.
    #[serde(default)]
    pub partial_response: bool,
}

fn default_peer_timeout() -> Duration {
    Duration::from_secs(3)
}

impl PeersConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.static_peers.is_empty() && self.dns.is_none() {
            return Err("peers: set static (a list of host:port) or dns (name:port)".into());
        }
        for p in self.static_peers.iter().chain(self.dns.iter()) {
            match p.rsplit_once(':') {
                Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(format!("peers: {p:?} is not host:port")),
            }
        }
        if self.timeout.is_zero() {
            return Err("peers.timeout must be above 0".into());
        }
        Ok(())
    }
}

fn to_proto_kind(k: MatchKind) -> i32 {
    use proto::matcher::Kind;
    (match k {
        MatchKind::Equal => Kind::Equal,
        MatchKind::NotEqual => Kind::NotEqual,
        MatchKind::Re => Kind::Regex,
        MatchKind::NotRe => Kind::NotRegex,
    }) as i32
}

fn from_proto_kind(k: i32) -> Result<MatchKind, String> {
    use proto::matcher::Kind;
    match Kind::try_from(k) {
        Ok(Kind::Equal) => Ok(MatchKind::Equal),
        Ok(Kind::NotEqual) => Ok(MatchKind::NotEqual),
        Ok(Kind::Regex) => Ok(MatchKind::Re),
        Ok(Kind::NotRegex) => Ok(MatchKind::NotRe),
        Err(_) => Err(format!("unknown matcher kind {k}")),
    }
}

/// One selector of a query and the window it reads.
pub type Selection = (Vec<LabelMatcher>, i64, i64);

/// Serves this agent's samples to the agents that fan queries out.
pub struct PeerService {
    pub store: Arc<Store>,
    pub compat: Compat,
    /// The façade's bearer tokens: peers present the first of theirs.
    pub tokens: Vec<Secret>,
    pub max_samples: usize,
}

impl PeerService {
    pub fn server(self) -> PeerServer<PeerService> {
        // Answers can be large (every sample of a window): far above gRPC's 4 MiB default.
        PeerServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(1 << 30)
            .send_compressed(tonic::codec::CompressionEncoding::Zstd)
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn select(
        &self,
        request: tonic::Request<proto::SelectRequest>,
    ) -> Result<tonic::Response<proto::SelectResponse>, tonic::Status> {
        if !self.tokens.is_empty() {
            let ok = request
                .metadata()
                .get_all("authorization")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.strip_prefix("Bearer "))
                .any(|t| self.tokens.iter().any(|s| s.matches(t.trim().as_bytes())));
            if !ok {
                return Err(tonic::Status::unauthenticated(
                    "missing or invalid bearer token",
                ));
            }
        }
        let req = request.into_inner();
        let mut selections = Vec::with_capacity(req.selectors.len());
        for s in &req.selectors {
            let mut ms = Vec::with_capacity(s.matchers.len());
            for m in &s.matchers {
                let kind = from_proto_kind(m.kind).map_err(tonic::Status::invalid_argument)?;
                ms.push(
                    LabelMatcher::with_compat(&m.name, kind, &m.value, self.compat)
                        .map_err(tonic::Status::invalid_argument)?,
                );
            }
            selections.push((ms, s.min_time_ms, s.max_time_ms));
        }
        let limit = match (req.max_samples as usize, self.max_samples) {
            (0, l) | (l, 0) => l,
            (a, b) => a.min(b),
        };
        let store = self.store.clone();
        let series = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut samples = 0usize;
            for (ms, lo, hi) in &selections {
                for s in store.select(ms, *lo, *hi).unwrap_or_default() {
                    samples += s.samples.len();
                    if limit > 0 && samples > limit {
                        return Err(tonic::Status::resource_exhausted(format!(
                            "query would load more than {limit} samples"
                        )));
                    }
                    out.push(proto::Series {
                        labels: s
                            .labels
                            .iter()
                            .map(|l| proto::Label {
                                name: l.name.to_string(),
                                value: l.value.to_string(),
                            })
                            .collect(),
                        timestamps_ms: s.samples.iter().map(|p| p.0).collect(),
                        values: s.samples.iter().map(|p| p.1).collect(),
                    });
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))??;
        Ok(tonic::Response::new(proto::SelectResponse { series }))
    }
}

/// The series of one query gathered from every source, merged by label set.
#[derive(Default)]
pub struct Merged {
    series: HashMap<Labels, Vec<(i64, f64)>>,
}

impl Merged {
    /// Adds a source's series; samples a series already has at the same timestamp are kept
    /// once (an agent listed twice, or a target scraped by two agents while it moves).
    pub fn add(&mut self, labels: Labels, samples: Vec<(i64, f64)>) {
        match self.series.get_mut(&labels) {
            None => {
                self.series.insert(labels, samples);
            }
            Some(have) => {
                let mut merged = Vec::with_capacity(have.len() + samples.len());
                let (mut i, mut j) = (0, 0);
                while i < have.len() || j < samples.len() {
                    let take_have =
                        j >= samples.len() || (i < have.len() && have[i].0 <= samples[j].0);
                    let next = if take_have {
                        i += 1;
                        have[i - 1]
                    } else {
                        j += 1;
                        samples[j - 1]
                    };
                    if merged.last().is_none_or(|l: &(i64, f64)| l.0 != next.0) {
                        merged.push(next);
                    }
                }
                *have = merged;
            }
        }
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

impl Queryable for Merged {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        let mut out = Vec::new();
        for (labels, samples) in &self.series {
            if !matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            {
                continue;
            }
            let lo = samples.partition_point(|p| p.0 < mint);
            let hi = samples.partition_point(|p| p.0 <= maxt);
            if lo < hi {
                out.push(SeriesSamples {
                    labels: labels.clone(),
                    samples: samples[lo..hi].to_vec(),
                });
            }
        }
        out.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
        Ok(out)
    }
}

/// What a fan-out gathered.
pub struct Gathered {
    pub merged: Merged,
    /// One entry per peer that did not answer (only with `partial_response`).
    pub warnings: Vec<String>,
    pub peers: usize,
}

/// The fan-out client of one exporter.
pub struct Fanout {
    cfg: PeersConfig,
    token: Option<Secret>,
    channels: std::sync::Mutex<HashMap<String, tonic::transport::Channel>>,
}

impl Fanout {
    pub fn new(cfg: PeersConfig, token: Option<Secret>) -> Self {
        Fanout {
            cfg,
            token,
            channels: Default::default(),
        }
    }

    /// The peers to ask now: the static list plus what the DNS name resolves to.
    async fn peers(&self) -> Result<Vec<String>, String> {
        let mut out = self.cfg.static_peers.clone();
        if let Some(name) = &self.cfg.dns {
            let addrs = tokio::net::lookup_host(name.as_str())
                .await
                .map_err(|e| format!("peers: cannot resolve {name}: {e}"))?;
            out.extend(addrs.map(|a| a.to_string()));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("peer {addr}: {e}"))?
            .connect_timeout(self.cfg.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    async fn ask(
        &self,
        addr: &str,
        req: proto::SelectRequest,
        deadline: Instant,
    ) -> Result<proto::SelectResponse, String> {
        let channel = self.channel(addr)?;
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(1 << 30)
            .send_compressed(tonic::codec::CompressionEncoding::Zstd)
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
        let mut r = tonic::Request::new(req);
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {}", t.expose()).parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        let asked = Instant::now();
        let until = deadline.min(asked + self.cfg.timeout);
        match tokio::time::timeout_at(until, client.select(r)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!(
                "peer {addr}: {} ({:?})",
                status.message(),
                status.code()
            )),
            Err(_) => Err(format!(
                "peer {addr}: no answer within {} ms",
                (until - asked).as_millis()
            )),
        }
    }

    /// Asks every peer for `selections` and merges their series with `local`'s. Fails naming
    /// each peer that did not answer, unless `partial_response` (then: warnings).
    pub async fn gather(
        &self,
        local: &Store,
        selections: &[Selection],
        max_samples: usize,
        deadline: Instant,
    ) -> Result<Gathered, String> {
        let peers = self.peers().await?;
        // Agents come and go with their pods: forget connections to addresses no longer listed.
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|addr, _| peers.contains(addr));
        let req = proto::SelectRequest {
            selectors: selections
                .iter()
                .map(|(ms, lo, hi)| proto::Selector {
                    matchers: ms
                        .iter()
                        .map(|m| proto::Matcher {
                            kind: to_proto_kind(m.kind),
                            name: m.name.clone(),
                            value: m.value.clone(),
                        })
                        .collect(),
                    min_time_ms: *lo,
                    max_time_ms: *hi,
                })
                .collect(),
            max_samples: max_samples as u64,
        };
        let answers = futures_util::future::join_all(
            peers.iter().map(|p| self.ask(p, req.clone(), deadline)),
        )
        .await;
        let mut merged = Merged::default();
        for (ms, lo, hi) in selections {
            for s in local.select(ms, *lo, *hi).unwrap_or_default() {
                merged.add(s.labels, s.samples);
            }
        }
        let mut failures = Vec::new();
        for a in answers {
            match a {
                Ok(resp) => {
                    for s in resp.series {
                        let labels = Labels::from_vec(
                            s.labels
                                .into_iter()
                                .map(|l| Label::new(l.name, l.value))
                                .collect(),
                        );
                        let samples = s.timestamps_ms.into_iter().zip(s.values).collect();
                        merged.add(labels, samples);
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        if !failures.is_empty() && !self.cfg.partial_response {
            return Err(format!(
                "{} of {} peers did not answer: {}",
                failures.len(),
                peers.len(),
                failures.join("; ")
            ));
        }
        Ok(Gathered {
            merged,
            warnings: failures,
            peers: peers.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_one_sample_per_timestamp() {
        let mut m = Merged::default();
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        m.add(l.clone(), vec![(1000, 1.0), (3000, 3.0)]);
        m.add(l.clone(), vec![(1000, 1.0), (2000, 2.0), (4000, 4.0)]);
        let got = m
            .select(
                &[LabelMatcher::new("job", MatchKind::Equal, "a").expect("matcher")],
                0,
                3500,
            )
            .expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]);
        assert!(m
            .select(
                &[LabelMatcher::new("job", MatchKind::Equal, "b").expect("matcher")],
                0,
                5000
            )
            .expect("select")
            .is_empty());
    }

    #[test]
    fn peers_config_checks() {
        let c: PeersConfig = serde_saphyr::from_str("static: ['10.0.0.1:9090']\n").expect("parses");
        assert!(c.validate().is_ok());
        assert_eq!(c.timeout, Duration::from_secs(3));
        let bad: PeersConfig = serde_saphyr::from_str("static: ['10.0.0.1']\n").expect("parses");
        assert!(bad.validate().is_err());
        let none: PeersConfig = serde_saphyr::from_str("timeout: 1s\n").expect("parses");
        assert!(none.validate().is_err());
    }
}
