//! The peer API's client: one question asked of every peer within the per-peer timeout,
//! failures settled by the partial-response rule, and the series of a query merged.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

use super::proto::peer_client::PeerClient;
use super::{proto, to_proto_selector, warming_up, PeersConfig, Selection};
use crate::config::secret::Secret;
use crate::model::Labels;
use crate::promql::{LabelMatcher, Queryable, SeriesSamples};
use crate::store::Store;

/// A series' label set and its raw samples.
type RawSeries = (Labels, Vec<(i64, f64)>);

/// The series of a peer's answer with their label sets: written out, or (from peers that
/// send each pair once) looked up in the answer's pair table; `None` when a reference points
/// outside it.
pub(super) fn answered_series(
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
            crate::exporters::promql::local::from_proto_labels(s.labels)
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
        self.series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
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
    Targets(proto::TargetsRequest),
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
                Ask::Targets(req) => call!(targets, req, Targets),
            }
        };
        let silent = || {
            // The connection may be dead without a FIN (a vanished node, a half-open link):
            // the next question opens a new one instead of waiting on it again.
            self.channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(addr);
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
    use crate::promql::MatchKind;

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
}
