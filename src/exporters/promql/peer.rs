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
use crate::model::Labels;
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
    /// Credentials of the peer API, when agents should use others than the query API's
    /// (which it requires otherwise): agents present them to each other, callers must.
    #[serde(default)]
    pub auth: Option<super::AuthConfig>,
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

pub use crate::promql::Selection;

/// A selector as the peer API carries it.
pub fn to_proto_selector(
    matchers: &[LabelMatcher],
    mint: i64,
    maxt: i64,
    needs_from: i64,
) -> proto::Selector {
    proto::Selector {
        matchers: matchers
            .iter()
            .map(|m| proto::Matcher {
                kind: to_proto_kind(m.kind),
                name: m.name.clone(),
                value: m.value.clone(),
            })
            .collect(),
        min_time_ms: mint,
        max_time_ms: maxt,
        needs_from_ms: needs_from,
    }
}

/// Selectors, each with its window, as the peer API carries them (no warm-up check).
pub fn to_proto_selectors<'a>(
    selectors: impl Iterator<Item = (&'a Vec<LabelMatcher>, i64, i64)>,
) -> Vec<proto::Selector> {
    selectors
        .map(|(m, mint, maxt)| to_proto_selector(m, mint, maxt, 0))
        .collect()
}

/// Most selectors one peer request may hold (a query within the nesting bound has fewer).
const MAX_SELECTORS: usize = 512;
/// Most matchers one selector of a peer request may hold.
const MAX_MATCHERS: usize = 64;

/// Serves this agent's samples to the agents that fan queries out.
pub struct PeerService {
    pub store: Arc<Store>,
    pub compat: Compat,
    /// The query API's credentials: a peer request must present them when there are any.
    pub credentials: super::Credentials,
    pub max_samples: usize,
    /// The query memory budget: no answer holds more.
    pub max_memory: usize,
    /// The window kept: what a peer running long enough would hold.
    pub retention: Duration,
    /// The longest an answer may take when the caller sets no deadline.
    pub timeout: Duration,
    /// This agent's scrape targets, for `Targets`.
    pub targets: crate::receivers::prometheus::scrape::TargetRegistry,
    /// This façade's random number, sent with each answer (`responder_id`).
    pub id: u64,
}

impl PeerService {
    pub fn server(self) -> PeerServer<PeerService> {
        // Answers can be large (every sample of a window): far above gRPC's 4 MiB default.
        // Requests are small: a query's selectors. Answers go uncompressed: with each label
        // pair sent once they are mostly samples, and compressing them cost more time on
        // every agent of a fan-out than it saved on the wire (`benches/fanout.rs`).
        PeerServer::new(self)
            .max_decoding_message_size(4 << 20)
            .max_encoding_message_size(1 << 30)
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
    }

    /// Admits a request presenting the peer API's credentials (any, when there are none).
    fn admit<T>(&self, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let values = request.metadata().get_all("authorization");
        match self
            .credentials
            .admit(values.iter().filter_map(|v| v.to_str().ok()))
        {
            Some(_) => Ok(()),
            None => Err(tonic::Status::unauthenticated(
                "missing or invalid credentials",
            )),
        }
    }

    /// The deadline of a request: the caller's, within the service's own timeout.
    fn deadline<T>(&self, request: &tonic::Request<T>) -> std::time::Instant {
        let timeout =
            grpc_timeout(request.metadata()).map_or(self.timeout, |t| t.min(self.timeout));
        std::time::Instant::now() + timeout
    }

    /// Refuses a request that needs samples from before this agent's window started, when
    /// the asking agent's window reaches further back: a restarted agent would otherwise
    /// answer for the whole mesh with a hole in it.
    fn check_warm(&self, selections: &[Selection], asker_from: i64) -> Result<(), tonic::Status> {
        match warming_up(selections, self.store.born_ms, asker_from, self.retention) {
            Some(why) => Err(tonic::Status::failed_precondition(why)),
            None => Ok(()),
        }
    }
}

/// Agents whose windows start within this of each other started together: neither has a
/// hole the other would fill.
const WARM_SLACK_MS: i64 = 5_000;

/// Why an agent whose window starts at `from` cannot answer `selections` whole, when another
/// agent's starts at `other_from` (0: unknown); `None` when it can. It cannot when a
/// selection needs samples from before `from`, the other agent's window started well
/// before, and the retention would have kept them.
pub fn warming_up(
    selections: &[Selection],
    from: i64,
    other_from: i64,
    retention: Duration,
) -> Option<String> {
    let now = super::now_ms();
    let kept_from = now.saturating_sub(retention.as_millis() as i64);
    let needs = selections
        .iter()
        .map(|s| s.needs_from)
        .filter(|&t| t != 0)
        .min()?;
    let hole = needs < from && from > kept_from.max(needs);
    let others_older = other_from != 0 && other_from + WARM_SLACK_MS < from;
    (hole && others_older).then(|| {
        format!(
            "warming up: its window starts {} s ago, the query needs {} s",
            (now - from).max(0) / 1000,
            (now - needs.max(kept_from)).max(0) / 1000
        )
    })
}

/// A peer request's selectors as matchers, or why they cannot be served: none, too many,
/// regexes over the query limits, or a selector that would match every series.
pub fn requested_selections(
    selectors: &[proto::Selector],
    compat: Compat,
) -> Result<Vec<Selection>, tonic::Status> {
    use crate::promql::bounds::{MAX_QUERY_REGEX_BYTES, MAX_REGEX_BYTES, MAX_REGEX_MATCHERS};
    let invalid = |m: String| tonic::Status::invalid_argument(m);
    if selectors.is_empty() {
        return Err(invalid("no selectors".into()));
    }
    if selectors.len() > MAX_SELECTORS {
        return Err(invalid(format!("more than {MAX_SELECTORS} selectors")));
    }
    let (mut regexes, mut regex_bytes) = (0usize, 0usize);
    let mut out = Vec::with_capacity(selectors.len());
    for s in selectors {
        if s.matchers.len() > MAX_MATCHERS {
            return Err(invalid(format!(
                "a selector has more than {MAX_MATCHERS} matchers"
            )));
        }
        let mut ms = Vec::with_capacity(s.matchers.len());
        for m in &s.matchers {
            let kind = from_proto_kind(m.kind).map_err(invalid)?;
            if matches!(kind, MatchKind::Re | MatchKind::NotRe) {
                regexes += 1;
                regex_bytes += m.value.len();
                if regexes > MAX_REGEX_MATCHERS
                    || m.value.len() > MAX_REGEX_BYTES
                    || regex_bytes > MAX_QUERY_REGEX_BYTES
                {
                    return Err(invalid(format!(
                        "regex matchers over the limits ({MAX_REGEX_MATCHERS} matchers, {MAX_REGEX_BYTES} bytes each, {MAX_QUERY_REGEX_BYTES} in all)"
                    )));
                }
            }
            ms.push(LabelMatcher::with_compat(&m.name, kind, &m.value, compat).map_err(invalid)?);
        }
        // As PromQL: a selector must narrow something down, or it asks for every series.
        if ms.iter().all(|m| m.matches("")) {
            return Err(invalid(
                "a selector must contain at least one matcher that does not match the empty string"
                    .into(),
            ));
        }
        out.push(Selection {
            matchers: ms,
            mint: s.min_time_ms,
            maxt: s.max_time_ms,
            needs_from: s.needs_from_ms,
        });
    }
    Ok(out)
}

/// The label pairs of one answer, each once, by first use.
#[derive(Default)]
struct PairTable {
    index: foldhash::HashMap<crate::model::Label, u32>,
    pairs: Vec<proto::Label>,
}

impl PairTable {
    fn index(&mut self, l: &crate::model::Label) -> u32 {
        if let Some(&i) = self.index.get(l) {
            return i;
        }
        let i = self.pairs.len() as u32;
        self.pairs.push(proto::Label {
            name: l.name.to_string(),
            value: l.value.to_string(),
        });
        self.index.insert(l.clone(), i);
        i
    }
}

/// A series' label set and its raw samples.
type RawSeries = (Labels, Vec<(i64, f64)>);

/// The series of a peer's answer with their label sets: written out, or (from peers that
/// send each pair once) looked up in the answer's pair table; `None` when a reference points
/// outside it.
fn answered_series(
    label_pairs: Vec<proto::Label>,
    series: Vec<proto::Series>,
) -> Option<Vec<RawSeries>> {
    let pairs: Vec<crate::model::Label> = label_pairs
        .into_iter()
        .map(|l| crate::model::Label::new(l.name, l.value))
        .collect();
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let labels = if s.label_refs.is_empty() {
            super::local::from_proto_labels(s.labels)
        } else {
            let mut v = Vec::with_capacity(s.label_refs.len());
            for r in s.label_refs {
                v.push(pairs.get(r as usize)?.clone());
            }
            Labels::from_vec(v)
        };
        out.push((labels, s.timestamps_ms.into_iter().zip(s.values).collect()));
    }
    Some(out)
}

/// Sets its flag when dropped: tonic and axum drop a handler whose caller went away, and
/// the blocking work it started sees the flag.
pub(super) struct Abandon(pub(super) Arc<std::sync::atomic::AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The deadline a gRPC caller set (`grpc-timeout`: digits and a unit).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Why a bounded selection stopped, as the peer API says it.
fn stopped(stop: crate::store::SelectStop, max_memory: usize) -> tonic::Status {
    match stop {
        crate::store::SelectStop::Budget => tonic::Status::resource_exhausted(format!(
            "the answer would hold more than {} MiB, the query memory budget",
            max_memory >> 20
        )),
        crate::store::SelectStop::Deadline => {
            tonic::Status::deadline_exceeded("deadline passed while selecting")
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn select(
        &self,
        request: tonic::Request<proto::SelectRequest>,
    ) -> Result<tonic::Response<proto::SelectResponse>, tonic::Status> {
        self.admit(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let selections = requested_selections(&req.selectors, self.compat)?;
        self.check_warm(&selections, req.asker_window_from_ms)?;
        let limit = match (req.max_samples as usize, self.max_samples) {
            (0, l) | (l, 0) => l,
            (a, b) => a.min(b),
        };
        let max_memory = self.max_memory;
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _abandon = Abandon(abandoned.clone());
        let store = self.store.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut pairs = PairTable::default();
            let (mut samples, mut used) = (0usize, 0usize);
            for sel in &selections {
                let bounds = crate::store::SelectBounds {
                    max_bytes: if max_memory == 0 {
                        0
                    } else {
                        max_memory.saturating_sub(used).max(1)
                    },
                    max_series: 0,
                    deadline: Some(deadline),
                    abandoned: Some(abandoned.clone()),
                };
                let found = store
                    .select_bounded(&sel.matchers, sel.mint, sel.maxt, true, &bounds)
                    .map_err(|stop| stopped(stop, max_memory))?;
                for s in found {
                    samples += s.samples.len();
                    used += crate::promql::memory_cost(s.samples.len(), 1);
                    if limit > 0 && samples > limit {
                        return Err(tonic::Status::resource_exhausted(format!(
                            "query would load more than {limit} samples"
                        )));
                    }
                    out.push(proto::Series {
                        labels: Vec::new(),
                        timestamps_ms: s.samples.iter().map(|p| p.0).collect(),
                        values: s.samples.iter().map(|p| p.1).collect(),
                        label_refs: s.labels.iter().map(|l| pairs.index(l)).collect(),
                    });
                }
            }
            Ok((out, pairs.pairs))
        });
        let (series, label_pairs) = tokio::time::timeout_at(deadline.into(), answer)
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("deadline passed while selecting"))?
            .map_err(|e| tonic::Status::internal(e.to_string()))??;
        Ok(tonic::Response::new(proto::SelectResponse {
            series,
            window_from_ms: self.store.born_ms,
            label_pairs,
            responder_id: self.id,
        }))
    }

    async fn labels(
        &self,
        request: tonic::Request<proto::LabelsRequest>,
    ) -> Result<tonic::Response<proto::LabelsResponse>, tonic::Status> {
        self.admit(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let selections = requested_selections(&req.selectors, self.compat)?;
        let kind = proto::labels_request::Kind::try_from(req.kind)
            .map_err(|_| tonic::Status::invalid_argument(format!("unknown kind {}", req.kind)))?;
        if kind == proto::labels_request::Kind::Values
            && !crate::receivers::prometheus::relabel::is_label_name(&req.label_name)
        {
            return Err(tonic::Status::invalid_argument(format!(
                "invalid label name: {:?}",
                req.label_name
            )));
        }
        let (start, end) = selections
            .first()
            .map_or((i64::MIN, i64::MAX), |s| (s.mint, s.maxt));
        let question = super::local::LabelsQuestion {
            selectors: selections.into_iter().map(|s| s.matchers).collect(),
            start,
            end,
            kind,
            label_name: req.label_name,
            limit: usize::try_from(req.limit).unwrap_or(usize::MAX),
        };
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _abandon = Abandon(abandoned.clone());
        let bounds = crate::store::SelectBounds {
            max_bytes: self.max_memory,
            max_series: 0,
            deadline: Some(deadline),
            abandoned: Some(abandoned),
        };
        let store = self.store.clone();
        let max_memory = self.max_memory;
        let answer = tokio::task::spawn_blocking(move || {
            super::local::labels(&store, &question, &bounds)
                .map_err(|stop| stopped(stop, max_memory))
        });
        let resp = tokio::time::timeout_at(deadline.into(), answer)
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("deadline passed while selecting"))?
            .map_err(|e| tonic::Status::internal(e.to_string()))??;
        Ok(tonic::Response::new(resp))
    }

    async fn metadata(
        &self,
        request: tonic::Request<proto::MetadataRequest>,
    ) -> Result<tonic::Response<proto::MetadataResponse>, tonic::Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        Ok(tonic::Response::new(super::local::metadata(
            &self.store,
            &req.metric,
            limit,
        )))
    }

    async fn targets(
        &self,
        request: tonic::Request<proto::TargetsRequest>,
    ) -> Result<tonic::Response<proto::TargetsResponse>, tonic::Status> {
        self.admit(&request)?;
        Ok(tonic::Response::new(super::local::targets(
            &self.targets,
            self.id,
        )))
    }
}

/// The series of one query gathered from every source, merged by label set; sorted by
/// label set once gathered ([`Merged::finish`]), as the evaluator reads them.
#[derive(Default)]
pub struct Merged {
    // Label sets hash with foldhash: SipHash over 25-label Istio series cost more than the
    // whole evaluation (`benches/fanout.rs`).
    index: foldhash::HashMap<Labels, usize>,
    series: Vec<RawSeries>,
    sorted: bool,
}

impl Merged {
    /// Adds a source's series; samples a series already has at the same timestamp are kept
    /// once (an agent listed twice, or a target scraped by two agents while it moves).
    pub fn add(&mut self, labels: Labels, samples: Vec<(i64, f64)>) {
        self.sorted = false;
        let Some(&i) = self.index.get(&labels) else {
            self.index.insert(labels.clone(), self.series.len());
            self.series.push((labels, samples));
            return;
        };
        let have = &mut self.series[i].1;
        let mut merged = Vec::with_capacity(have.len() + samples.len());
        let (mut i, mut j) = (0, 0);
        while i < have.len() || j < samples.len() {
            let take_have = j >= samples.len() || (i < have.len() && have[i].0 <= samples[j].0);
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

    /// Orders the series by label set; nothing is added after.
    pub fn finish(&mut self) {
        self.series
            .sort_unstable_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()));
        self.index = Default::default();
        self.sorted = true;
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
        if !self.sorted {
            out.sort_by(|a, b| a.labels.as_slice().cmp(b.labels.as_slice()));
        }
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

/// One question asked of every peer.
#[derive(Clone)]
pub enum Ask {
    Select(proto::SelectRequest),
    Labels(proto::LabelsRequest),
    Metadata(proto::MetadataRequest),
    Targets,
}

/// A peer's answer, of the kind asked.
pub enum Answer {
    Select(proto::SelectResponse),
    Labels(proto::LabelsResponse),
    Metadata(proto::MetadataResponse),
    Targets(proto::TargetsResponse),
}

/// What the peers answered, and who did not.
pub struct Asked {
    /// Each answer with the address of the peer that gave it.
    pub answers: Vec<(String, Answer)>,
    /// One line per peer that did not answer, naming it.
    pub failures: Vec<String>,
    pub peers: usize,
}

/// The fan-out client of one exporter.
pub struct Fanout {
    cfg: PeersConfig,
    /// The `Authorization` value presented to peers.
    authorization: Option<Secret>,
    channels: std::sync::Mutex<HashMap<String, tonic::transport::Channel>>,
    /// This façade's own number (its peer service's `responder_id`).
    id: u64,
    /// This façade's own address among the peers, once an answer showed it: not asked again
    /// (every caller merges this agent's window itself).
    own_address: std::sync::Mutex<Option<String>>,
    /// The DNS name's last answer, and when it came.
    resolved: std::sync::Mutex<Option<(Instant, Vec<String>)>>,
}

/// How long a DNS answer for the peers is used: a query does not wait on a lookup, and an
/// agent that appears is asked within this; one that is gone is still asked, and named.
const DNS_FRESH: Duration = Duration::from_secs(5);

impl Fanout {
    /// The client of the façade whose peer service answers with `id`.
    pub fn new(cfg: PeersConfig, authorization: Option<Secret>, id: u64) -> Self {
        Fanout {
            cfg,
            authorization,
            channels: Default::default(),
            id,
            own_address: Default::default(),
            resolved: Default::default(),
        }
    }

    fn note_self(&self, addr: &str) {
        let mut own = self.own_address.lock().unwrap_or_else(|e| e.into_inner());
        if own.is_none() {
            tracing::debug!(address = %addr, "this agent is among its own peers");
            *own = Some(addr.to_string());
        }
    }

    /// The peers to ask now: the static list plus what the DNS name resolves to (looked up
    /// again once the last answer is [`DNS_FRESH`] old).
    async fn peers(&self) -> Result<Vec<String>, String> {
        let mut out = self.cfg.static_peers.clone();
        if let Some(name) = &self.cfg.dns {
            let cached = {
                let c = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
                c.as_ref()
                    .filter(|(at, _)| at.elapsed() < DNS_FRESH)
                    .map(|(_, addrs)| addrs.clone())
            };
            let addrs = match cached {
                Some(a) => a,
                None => {
                    let addrs: Vec<String> = tokio::net::lookup_host(name.as_str())
                        .await
                        .map_err(|e| format!("peers: cannot resolve {name}: {e}"))?
                        .map(|a| a.to_string())
                        .collect();
                    *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((Instant::now(), addrs.clone()));
                    addrs
                }
            };
            out.extend(addrs);
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

    /// Asks one peer one question, within the peer timeout and `deadline`.
    async fn ask(&self, addr: &str, question: Ask, deadline: Instant) -> Result<Answer, String> {
        let channel = self.channel(addr)?;
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(1 << 30)
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
        let authorize = |mut r: tonic::metadata::MetadataMap| {
            if let Some(a) = &self.authorization {
                if let Ok(v) = a.expose().parse() {
                    r.insert("authorization", v);
                }
            }
            r
        };
        let asked = Instant::now();
        let until = deadline.min(asked + self.cfg.timeout);
        let call = async {
            macro_rules! call {
                ($method:ident, $req:expr, $answer:ident) => {{
                    let mut r = tonic::Request::new($req);
                    *r.metadata_mut() = authorize(std::mem::take(r.metadata_mut()));
                    r.set_timeout(until.saturating_duration_since(Instant::now()));
                    client
                        .$method(r)
                        .await
                        .map(|a| Answer::$answer(a.into_inner()))
                }};
            }
            match question {
                Ask::Select(req) => call!(select, req, Select),
                Ask::Labels(req) => call!(labels, req, Labels),
                Ask::Metadata(req) => call!(metadata, req, Metadata),
                Ask::Targets => call!(targets, proto::TargetsRequest {}, Targets),
            }
        };
        let silent = || {
            format!(
                "peer {addr}: no answer within {} ms",
                (until - asked).as_millis()
            )
        };
        match tokio::time::timeout_at(until, call).await {
            Ok(Ok(answer)) => Ok(answer),
            // The client's own deadline (the `grpc-timeout` it sent) passed first.
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled && Instant::now() >= until =>
            {
                Err(silent())
            }
            Ok(Err(status)) => Err(format!(
                "peer {addr}: {} ({:?})",
                status.message(),
                status.code()
            )),
            Err(_) => Err(silent()),
        }
    }

    /// Asks every peer `question`: their answers, and one line per peer that did not answer.
    pub async fn ask_all(&self, question: Ask, deadline: Instant) -> Result<Asked, String> {
        let peers = self.peers().await?;
        // Agents come and go with their pods: forget connections to addresses no longer listed.
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|addr, _| peers.contains(addr));
        let own = self
            .own_address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let others = peers.iter().filter(|p| Some(*p) != own.as_ref());
        let question = &question;
        let replies =
            futures_util::future::join_all(others.map(|p| async move {
                (p.clone(), self.ask(p, question.clone(), deadline).await)
            }))
            .await;
        let mut asked = Asked {
            answers: Vec::with_capacity(replies.len()),
            failures: Vec::new(),
            peers: peers.len(),
        };
        for (addr, r) in replies {
            match r {
                Ok(a) => asked.answers.push((addr, a)),
                Err(e) => asked.failures.push(e),
            }
        }
        Ok(asked)
    }

    /// Peers' failures as the answer's warnings with `partial_response`, else as the error.
    pub fn settle(&self, failures: Vec<String>, peers: usize) -> Result<Vec<String>, String> {
        if !failures.is_empty() && !self.cfg.partial_response {
            return Err(format!(
                "{} of {peers} peers did not answer: {}",
                failures.len(),
                failures.join("; ")
            ));
        }
        Ok(failures)
    }

    /// Asks every peer for `selections` and merges their series with `local`'s. Fails naming
    /// each peer that did not answer, unless `partial_response` (then: warnings).
    pub async fn gather(
        &self,
        local: &Store,
        selections: &[Selection],
        max_samples: usize,
        retention: Duration,
        deadline: Instant,
    ) -> Result<Gathered, String> {
        // A query without selectors (`vector(1)`, `time()`) needs nothing from anyone.
        if selections.is_empty() {
            return Ok(Gathered {
                merged: Merged::default(),
                warnings: Vec::new(),
                peers: 0,
            });
        }
        let req = proto::SelectRequest {
            selectors: selections
                .iter()
                .map(|sel| to_proto_selector(&sel.matchers, sel.mint, sel.maxt, sel.needs_from))
                .collect(),
            max_samples: max_samples as u64,
            asker_window_from_ms: local.born_ms,
        };
        let asked = self.ask_all(Ask::Select(req), deadline).await?;
        let mut merged = Merged::default();
        for sel in selections {
            for s in local
                .select(&sel.matchers, sel.mint, sel.maxt)
                .unwrap_or_default()
            {
                merged.add(s.labels, s.samples);
            }
        }
        let mut failures = asked.failures;
        let mut oldest_peer = 0i64;
        for (addr, a) in asked.answers {
            let Answer::Select(resp) = a else { continue };
            if resp.responder_id == self.id {
                // This agent, listed among its peers: its window is read directly from now on.
                self.note_self(&addr);
                continue;
            }
            if resp.window_from_ms != 0 && (oldest_peer == 0 || resp.window_from_ms < oldest_peer) {
                oldest_peer = resp.window_from_ms;
            }
            match answered_series(resp.label_pairs, resp.series) {
                Some(series) => {
                    for (labels, samples) in series {
                        merged.add(labels, samples);
                    }
                }
                None => failures.push(format!(
                    "peer {addr}: an answer whose labels point outside its pair table"
                )),
            }
        }
        // This agent restarted after its peers: its own part of the answer has the hole.
        if let Some(why) = warming_up(selections, local.born_ms, oldest_peer, retention) {
            failures.push(format!("this agent: {why}"));
        }
        let warnings = self.settle(failures, asked.peers)?;
        merged.finish();
        Ok(Gathered {
            merged,
            warnings,
            peers: asked.peers,
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
    fn label_pairs_are_sent_once_and_read_back() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("pod", "p1")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("pod", "p2")]);
        let mut table = PairTable::default();
        let series: Vec<proto::Series> = [&a, &b]
            .iter()
            .map(|l| proto::Series {
                label_refs: l.iter().map(|x| table.index(x)).collect(),
                timestamps_ms: vec![1000],
                values: vec![1.0],
                ..Default::default()
            })
            .collect();
        assert_eq!(table.pairs.len(), 4, "__name__ and job once, two pods");
        let back = answered_series(table.pairs.clone(), series.clone()).expect("valid");
        assert_eq!(back[0].0, a);
        assert_eq!(back[1].0, b);
        assert_eq!(back[1].1, vec![(1000, 1.0)]);
        let mut broken = series;
        broken[0].label_refs.push(99);
        assert!(answered_series(table.pairs, broken).is_none());
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
