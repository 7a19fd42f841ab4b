//! Query fan-out across agents. Every `promql` exporter serves the peer API (`proto/`,
//! gRPC on the façade's own port): raw samples of the series matching a selector in a time
//! window. An exporter with `peers` answers a query by asking every peer for the samples of
//! the query's selectors, merging them with its own, and evaluating on the merged series —
//! the same evaluator, so a DaemonSet of agents answers like one Prometheus holding it all.
//! A peer that does not answer fails the query with its name, unless `partial_response`.
//!
//! Here: the config, the wire types and the checks both sides share; `server.rs` answers
//! peers, `client.rs` asks them and merges what they send.

use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

use crate::config::units::de_duration;
use crate::promql::{Compat, LabelMatcher, MatchKind};

/// Code generated from `proto/meshmetrics/peer/v1/peer.proto`.
pub mod proto {
    tonic::include_proto!("meshmetrics.peer.v1");
}

mod client;
mod server;

pub use client::{Answer, Ask, Asked, Fanout, Gathered, Merged};
pub use server::PeerService;

/// `exporters: promql: peers:`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
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
    #[schemars(with = "crate::config::units::DurationText")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    #[test]
    fn label_pairs_are_sent_once_and_read_back() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("pod", "p1")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("pod", "p2")]);
        let mut table = server::PairTable::default();
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
        let back = client::answered_series(table.pairs.clone(), series.clone()).expect("valid");
        assert_eq!(back[0].0, a);
        assert_eq!(back[1].0, b);
        assert_eq!(back[1].1, vec![(1000, 1.0)]);
        let mut broken = series;
        broken[0].label_refs.push(99);
        assert!(client::answered_series(table.pairs, broken).is_none());
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
