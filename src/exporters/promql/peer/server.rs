//! The peer API's server: this agent's samples, label sets, metadata and targets for the
//! agents that fan queries out, within the caller's deadline and the query memory budget.

use std::sync::Arc;
use std::time::Duration;

use super::proto::peer_server::{Peer, PeerServer};
use super::{grpc_timeout, proto, requested_selections, warming_up, Abandon, Selection};
use crate::promql::Compat;
use crate::store::Store;

/// Serves this agent's samples to the agents that fan queries out.
pub struct PeerService {
    pub store: Arc<Store>,
    pub compat: Compat,
    /// The query API's credentials: a peer request must present them when there are any.
    pub credentials: crate::exporters::promql::Credentials,
    pub max_samples: usize,
    /// The query memory budget: no answer holds more.
    pub max_memory: usize,
    /// The window kept: what a peer running long enough would hold.
    pub retention: Duration,
    /// The longest an answer may take when the caller sets no deadline.
    pub timeout: Duration,
    /// This agent's scrape targets, for `Targets`.
    pub targets: crate::agent::TargetRegistry,
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

/// The label pairs of one answer, each once, by first use.
#[derive(Default)]
pub(super) struct PairTable {
    index: foldhash::HashMap<crate::model::Label, u32>,
    pub(super) pairs: Vec<proto::Label>,
}

impl PairTable {
    pub(super) fn index(&mut self, l: &crate::model::Label) -> u32 {
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
            && !crate::model::is_label_name(&req.label_name)
        {
            return Err(tonic::Status::invalid_argument(format!(
                "invalid label name: {:?}",
                req.label_name
            )));
        }
        let (start, end) = selections
            .first()
            .map_or((i64::MIN, i64::MAX), |s| (s.mint, s.maxt));
        let question = crate::exporters::promql::local::LabelsQuestion {
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
            crate::exporters::promql::local::labels(&store, &question, &bounds)
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
        Ok(tonic::Response::new(
            crate::exporters::promql::local::metadata(&self.store, &req.metric, limit),
        ))
    }

    async fn targets(
        &self,
        request: tonic::Request<proto::TargetsRequest>,
    ) -> Result<tonic::Response<proto::TargetsResponse>, tonic::Status> {
        self.admit(&request)?;
        let max_dropped = usize::try_from(request.get_ref().max_dropped).unwrap_or(usize::MAX);
        let mut resp = crate::exporters::promql::local::targets(&self.targets, self.id);
        resp.dropped.truncate(max_dropped);
        Ok(tonic::Response::new(resp))
    }
}
