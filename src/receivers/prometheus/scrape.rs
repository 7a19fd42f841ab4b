//! One scrape loop per target: fetch, parse, label, relabel, limit, staleness, synthetic series.
//!
//! The per-target cache is keyed by the raw series bytes (`name{labels}` as exposed): a series
//! seen before skips label parsing, merging and metric relabeling entirely.

use http::HeaderMap;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::ResolvedScrapeConfig;
use super::connection::{
    error_chain, give_buffer, scrape_request, take_buffer, BodyFrames, Connection, Connector,
};
use super::families::{
    append_stale, assemble, family_index_owners, family_of, resource_for, resource_slot, FamilyKey,
};
use super::series::{RawSeries, SeriesEntry, Tracked, Tracks};
use super::target::Target;
use crate::agent::{TargetRegistry, TargetStatus};
use crate::model::exposition::{line_pieces, Entry, Format, Parser};
use crate::model::relabel::{relabel, LabelMap};
use crate::model::{stale_nan, Interner, Labels, MetricFamily, MetricKind, Metrics, Sample};
use crate::pipeline::Fanout;
use crate::telemetry::{SharedTelemetry, Telemetry};

/// A sample whose own timestamp is further ahead of the scrape than this is dropped: a
/// target with a clock gone wrong would otherwise pin its series in a query window past
/// retention, and its nanoseconds overflow OTLP's for timestamps far enough out.
pub const FUTURE_SAMPLE_LIMIT_MS: i64 = 10 * 60 * 1000;

/// How old a sample's own timestamp may be before it is dropped: the longest window a query
/// façade of the config keeps (set by the service), an hour without one, as Prometheus's head
/// refuses samples older than what it can still append.
static PAST_SAMPLE_LIMIT_MS: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(60 * 60 * 1000);

/// Sets how old a scraped sample's own timestamp may be (see [`PAST_SAMPLE_LIMIT_MS`]).
pub fn set_past_sample_limit(limit: Duration) {
    let ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    PAST_SAMPLE_LIMIT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// A sample's exposed name and the addresses of its series' final name, job and instance:
/// samples equal in these belong to one family.
type FamilyMemoKey<'a> = (&'a [u8], usize, usize, usize);

/// Why a scrape failed. Its text names the target, and the line of the body where a line is
/// at fault (what `up`'s reason, targetz and the logs show).
#[derive(Debug, Clone, PartialEq)]
pub enum ScrapeError {
    /// No whole answer within `scrape_timeout`.
    Timeout { url: String, after: Duration },
    /// The request could not be made or answered: connection, HTTP status, reading or
    /// inflating the body.
    Fetch { url: String, reason: String },
    /// The body (inflated) is larger than `body_size_limit`.
    BodyTooLarge { url: String, limit: u64 },
    /// A line of the body does not parse.
    Parse {
        url: String,
        line: usize,
        message: String,
    },
    /// A line parsed differently the second time it was read (a target changing its body
    /// under the parser is the only way).
    Unstable { url: String, line: usize },
    /// A series the job refuses: a label limit, or labels that collide after relabeling.
    Series {
        url: String,
        line: usize,
        reason: String,
    },
    /// More samples than `sample_limit`.
    SampleLimit { url: String, limit: u64 },
}

impl std::fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeError::Timeout { url, after } => write!(
                f,
                "scrape of {url} timed out after {}",
                crate::config::units::format_duration(*after)
            ),
            ScrapeError::Fetch { url, reason } => write!(f, "scrape of {url} failed: {reason}"),
            ScrapeError::BodyTooLarge { url, limit } => write!(
                f,
                "scrape of {url} failed: body size limit of {limit} bytes exceeded"
            ),
            ScrapeError::Parse { url, line, message } => write!(
                f,
                "scrape of {url} failed: parse error at line {line}: {message}"
            ),
            ScrapeError::Unstable { url, line } => write!(
                f,
                "scrape of {url} failed: line {line} read differently twice"
            ),
            ScrapeError::Series { url, line, reason } => {
                write!(f, "scrape of {url} failed at line {line}: {reason}")
            }
            ScrapeError::SampleLimit { url, limit } => write!(
                f,
                "scrape of {url} failed: sample_limit of {limit} exceeded"
            ),
        }
    }
}

impl std::error::Error for ScrapeError {}

/// Maps keyed by values that are hashes already, or small keys: a fast non-DoS-resistant
/// hasher is enough, and SipHash showed up in scrape profiles.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

pub struct ScrapeLoop {
    pub target: Target,
    /// `target.key()`, computed once: it identifies the target in the status registry.
    key: u64,
    cfg: Arc<ResolvedScrapeConfig>,
    connector: Connector,
    /// The target's connection, kept between scrapes.
    connection: Connection,
    request: Result<(http::Uri, HeaderMap), String>,
    out: Fanout,
    telemetry: SharedTelemetry,
    registry: TargetRegistry,
    receiver: String,
    /// What each raw series of the body became: a known series costs one hash.
    raw: RawSeries,
    /// The format the raw series were validated in: a change forgets them.
    cache_format: Option<Format>,
    interner: Arc<Interner>,
    gates: crate::processors::memory_limiter::SharedGates,
    /// Series of the last successful scrape, for staleness.
    tracks: Tracks,
    /// Number of the current scrape, for `Tracked::seen`, and of the last successful one.
    generation: u32,
    completed: u32,
    target_labels: Vec<(String, String)>,
    resource_base: Vec<(String, String)>,
    /// Samples per family in the last build, in the order families were met: a target
    /// exposes the same families in the same order, so each list is allocated once, at size.
    family_sizes: Vec<usize>,
    /// The last body as received, read in place (see `line_pieces`).
    frames: BodyFrames,
    /// A gzip body, and what it inflated to (buffers lent from the pool).
    body: Vec<u8>,
    inflated: Vec<u8>,
}

use crate::clock::now_ms;

impl ScrapeLoop {
    pub fn new(target: Target, cfg: Arc<ResolvedScrapeConfig>, shared: LoopShared) -> Self {
        let LoopShared {
            connector,
            out,
            telemetry,
            registry,
            receiver,
            interner,
            gates,
        } = shared;
        let mut target_labels: Vec<(String, String)> = target
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &cfg.external_labels {
            if !target.labels.contains_key(k) {
                target_labels.push((k.clone(), v.clone()));
            }
        }
        let mut resource_base = resource_for(target.job(), target.instance(), &target.scheme);
        resource_base.extend(
            super::discovery::kubernetes::resource::k8s_resource_attributes(&target.discovered),
        );
        ScrapeLoop {
            key: target.key(),
            request: scrape_request(&cfg, &target),
            target,
            cfg,
            connector,
            connection: Connection::default(),
            out,
            telemetry,
            registry,
            receiver,
            raw: RawSeries::default(),
            cache_format: None,
            interner,
            gates,
            tracks: Tracks::default(),
            generation: 0,
            completed: 0,
            target_labels,
            resource_base,
            family_sizes: Vec::new(),
            frames: BodyFrames::default(),
            body: Vec::new(),
            inflated: Vec::new(),
        }
    }

    /// The delay before the first scrape: a per-target offset within the interval, so that
    /// many targets spread out and each keeps a steady phase across restarts.
    pub fn initial_delay(&self) -> Duration {
        let interval = self.target.interval.as_nanos() as u64;
        let offset = self.key % interval.max(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let phase = (now % interval.max(1)) as i128;
        let mut wait = offset as i128 - phase;
        if wait < 0 {
            wait += interval as i128;
        }
        Duration::from_nanos(wait as u64)
    }

    /// Runs until `stop` fires. On a removal stop, emits staleness markers for every series.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<StopReason>) {
        let key = self.key;
        self.update_status(|s| s.health = "unknown");
        tokio::select! {
            _ = tokio::time::sleep(self.initial_delay()) => {}
            _ = stop.changed() => {}
        }
        let mut ticker = tokio::time::interval(self.target.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if *stop.borrow() != StopReason::Running {
                break;
            }
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => break,
            }
            let gates = self.gates.load();
            if let Some(gate) = gates.iter().find(|g| !g.open()) {
                // Refused before it starts: no body is read, nothing accepted is dropped, and
                // the series keep their state (a skipped scrape is not a failed one).
                gate.skipped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let labels =
                    Telemetry::labels(&[("receiver", &self.receiver), ("job", &self.cfg.job_name)]);
                self.telemetry.scrapes_skipped.get_or_create(&labels).inc();
                self.telemetry
                    .receiver_refused
                    .get_or_create(&Telemetry::labels(&[("receiver", &self.receiver)]))
                    .inc_by(self.tracks.iter().filter(|t| t.marks).count() as f64);
                self.update_status(|s| {
                    s.last_error = Some("scrape skipped: memory limiter is refusing data".into())
                });
                continue;
            }
            let m = self.scrape_once().await;
            self.out.send(m).await;
        }
        let reason = *stop.borrow();
        if reason == StopReason::Removed {
            let m = self.stale_all(now_ms(), true);
            self.out.send(m).await;
        }
        if let Ok(mut r) = self.registry.active.lock() {
            r.remove(&key);
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut TargetStatus)) {
        if let Ok(mut r) = self.registry.active.lock() {
            let s = r.entry(self.key).or_insert_with(|| TargetStatus {
                job: self.cfg.job_name.clone(),
                url: self.target.url.clone(),
                labels: self.target.labels.clone(),
                discovered: self.target.discovered.clone(),
                interval: self.target.interval,
                timeout: self.target.timeout,
                ..Default::default()
            });
            f(s);
        }
    }

    /// One scrape: returns the data to send (samples, staleness markers, synthetic series).
    pub async fn scrape_once(&mut self) -> Metrics {
        let start_ms = now_ms();
        let started = Instant::now();
        let job_labels = Telemetry::labels(&[("job", &self.cfg.job_name)]);
        self.telemetry.scrapes.get_or_create(&job_labels).inc();
        let fetched = tokio::time::timeout(self.target.timeout, self.fetch()).await;
        let result = match fetched {
            Ok(Ok(format)) => self.build(format, start_ms),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ScrapeError::Timeout {
                url: self.target.url.clone(),
                after: self.target.timeout,
            }),
        };
        // Back to the pool, or to the allocator: a target holds no body between scrapes.
        self.frames.clear();
        give_buffer(std::mem::take(&mut self.body));
        give_buffer(std::mem::take(&mut self.inflated));
        let duration = started.elapsed();
        let mut m = match result {
            Ok(built) => {
                let samples = built.scraped;
                let post = built.post_relabel;
                let added = built.added;
                let out_of_bounds = built.out_of_bounds;
                if out_of_bounds > 0 {
                    self.telemetry
                        .samples_out_of_bounds
                        .get_or_create(&job_labels)
                        .inc_by(out_of_bounds as f64);
                }
                let mut m = built.metrics;
                self.append_report(&mut m, start_ms, 1.0, duration, samples, post, added);
                self.update_status(|s| {
                    s.last_scrape_unix_ms = start_ms;
                    s.last_duration = duration;
                    s.last_samples = samples;
                    s.last_out_of_bounds = out_of_bounds;
                    s.out_of_bounds_total += out_of_bounds as u64;
                    s.last_error = None;
                    s.health = "up";
                });
                m
            }
            Err(error) => {
                let msg = error.to_string();
                self.telemetry
                    .scrape_failures
                    .get_or_create(&job_labels)
                    .inc();
                tracing::warn!(target_url = %self.target.url, job = %self.cfg.job_name, error = %msg, "scrape failed");
                let mut m = self.stale_all(start_ms, false);
                self.append_report(&mut m, start_ms, 0.0, duration, 0, 0, 0);
                self.update_status(|s| {
                    s.last_scrape_unix_ms = start_ms;
                    s.last_duration = duration;
                    s.last_samples = 0;
                    s.last_error = Some(msg.clone());
                    s.health = "down";
                });
                m
            }
        };
        let points = m.point_count() as f64;
        self.telemetry
            .receiver_accepted
            .get_or_create(&Telemetry::labels(&[
                ("receiver", &self.receiver),
                ("transport", "http"),
            ]))
            .inc_by(points);
        m.resources.retain(|r| !r.families.is_empty());
        m
    }

    /// Fetches the body into `self.frames`, or inflated into `self.inflated`; returns the
    /// format.
    async fn fetch(&mut self) -> Result<Format, ScrapeError> {
        let url = &self.target.url;
        let fail = |reason: String| ScrapeError::Fetch {
            url: url.clone(),
            reason,
        };
        let too_large = |limit: u64| ScrapeError::BodyTooLarge {
            url: url.clone(),
            limit,
        };
        let (uri, headers) = self.request.as_ref().map_err(|m| fail(m.clone()))?;
        let (resp, mut exchange) = self
            .connection
            .get_following(&self.connector, uri, headers, self.cfg.follow_redirects)
            .await
            .map_err(fail)?;
        let status = resp.status();
        if status != http::StatusCode::OK {
            return Err(fail(format!(
                "server returned HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let gzip = resp
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        let limit = self.cfg.body_size_limit;
        let over = |n: usize| limit > 0 && n as u64 > limit;
        self.frames.clear();
        let mut body = resp.into_body();
        while let Some(frame) = exchange.drive(body.frame()).await {
            let frame = frame.map_err(|e| fail(format!("reading body: {}", error_chain(&e))))?;
            if let Ok(data) = frame.into_data() {
                self.frames.push(data);
                if over(self.frames.received()) {
                    return Err(too_large(limit));
                }
            }
        }
        self.connection.finish(exchange).await;
        if gzip {
            // Compressed bytes are few: they are joined, and inflated into one buffer.
            self.body = take_buffer();
            self.body.reserve_exact(self.frames.received());
            for frame in self.frames.finish() {
                self.body.extend_from_slice(frame);
            }
            self.frames.clear();
            self.inflated = take_buffer();
            let mut dec = flate2::read::GzDecoder::new(&self.body[..]);
            let cap = if limit > 0 { limit + 1 } else { u64::MAX };
            (&mut dec)
                .take(cap)
                .read_to_end(&mut self.inflated)
                .map_err(|e| fail(format!("decompressing gzip body: {e}")))?;
            if over(self.inflated.len()) {
                return Err(too_large(limit));
            }
        }
        Ok(Format::from_content_type(content_type.as_deref()))
    }

    /// Builds the series entry for raw series bytes not in the cache.
    fn label_series(
        &self,
        name: &str,
        labels: Vec<(String, String)>,
    ) -> Result<Option<Arc<SeriesEntry>>, String> {
        let mut lset: LabelMap = labels.into_iter().collect();
        lset.insert("__name__".into(), name.to_string());
        // Target labels: honor_labels keeps the scraped value, otherwise clashes become
        // exported_<name>.
        for (k, v) in &self.target_labels {
            if self.cfg.honor_labels {
                lset.entry(k.clone()).or_insert_with(|| v.clone());
            } else {
                if let Some(existing) = lset.remove(k) {
                    let mut ek = format!("exported_{k}");
                    while lset.contains_key(&ek) {
                        ek = format!("exported_{ek}");
                    }
                    if !existing.is_empty() {
                        lset.insert(ek, existing);
                    }
                }
                lset.insert(k.clone(), v.clone());
            }
        }
        if !relabel(&mut lset, &self.cfg.metric_relabel_configs) {
            return Ok(None);
        }
        lset.retain(|_, v| !v.is_empty());
        let Some(name) = lset.remove("__name__") else {
            return Ok(None);
        };
        let cfg = &self.cfg;
        if cfg.label_limit > 0 && lset.len() as u64 + 1 > cfg.label_limit {
            return Err(format!(
                "label_limit exceeded (metric: {name}, number of labels: {}, limit: {})",
                lset.len() + 1,
                cfg.label_limit
            ));
        }
        for (k, v) in &lset {
            if cfg.label_name_length_limit > 0 && k.len() as u64 > cfg.label_name_length_limit {
                return Err(format!(
                    "label_name_length_limit exceeded (metric: {name}, label name: {k}, limit: {})",
                    cfg.label_name_length_limit
                ));
            }
            if cfg.label_value_length_limit > 0 && v.len() as u64 > cfg.label_value_length_limit {
                return Err(format!(
                    "label_value_length_limit exceeded (metric: {name}, label: {k}, value length: {}, limit: {})",
                    v.len(),
                    cfg.label_value_length_limit
                ));
            }
        }
        let job = self
            .interner
            .label("job", &lset.remove("job").unwrap_or_default());
        let instance = self
            .interner
            .label("instance", &lset.remove("instance").unwrap_or_default());
        let mut hash_src = String::with_capacity(128);
        for part in [&*job.value, &*instance.value, name.as_str()] {
            hash_src.push_str(part);
            hash_src.push('\u{ff}');
        }
        for (k, v) in &lset {
            hash_src.push_str(k);
            hash_src.push('\u{ff}');
            hash_src.push_str(v);
            hash_src.push('\u{ff}');
        }
        let labels = self.interner.label_set(
            lset.into_iter()
                .map(|(k, v)| self.interner.label(&k, &v))
                .collect(),
        );
        Ok(Some(Arc::new(SeriesEntry {
            name: self.interner.intern(&name),
            labels,
            job,
            instance,
            hash: xxhash_rust::xxh3::xxh3_64(hash_src.as_bytes()),
        })))
    }

    fn build(&mut self, format: Format, ts: i64) -> Result<Built, ScrapeError> {
        let mut frames = std::mem::take(&mut self.frames);
        let inflated = std::mem::take(&mut self.inflated);
        let mut joins = Vec::new();
        let pieces = if frames.received() == 0 {
            vec![&inflated[..]]
        } else {
            line_pieces(frames.finish(), &mut joins)
        };
        let r = self.build_from(&pieces, format, ts);
        drop(pieces);
        (self.frames, self.inflated) = (frames, inflated);
        r
    }

    /// Builds a scrape's data from its body, in pieces of whole lines.
    fn build_from(
        &mut self,
        body: &[&[u8]],
        format: Format,
        ts: i64,
    ) -> Result<Built, ScrapeError> {
        let url = self.target.url.clone();
        let (first, rest) = body
            .split_first()
            .map_or((&[][..], &[][..]), |(f, r)| (*f, r));
        let mut parser = Parser::over_pieces(first, rest, format).with_lazy_labels();
        // Cached series were validated as `format`; under another format they must be again.
        if self.cache_format != Some(format) {
            self.raw.clear();
            self.cache_format = Some(format);
        }
        self.raw.begin();
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let mut meta: HashMap<String, (MetricKind, Arc<str>, Arc<str>)> = HashMap::new();
        let mut families: Vec<MetricFamily> = Vec::new();
        let mut family_index: HashMap<FamilyKey, usize> = HashMap::new();
        // Family of each (exposed name, final name, job, instance) seen in this body; the last
        // one is checked first, as samples of one family usually come together.
        let mut family_memo: FastMap<FamilyMemoKey, usize> = FastMap::default();
        let mut last_family: Option<(FamilyMemoKey, usize)> = None;
        let mut scraped = 0usize;
        let mut post = 0usize;
        let mut added = 0usize;
        let mut out_of_bounds = 0usize;
        let (too_old, too_new) = (
            ts.saturating_sub(PAST_SAMPLE_LIMIT_MS.load(std::sync::atomic::Ordering::Relaxed)),
            ts.saturating_add(FUTURE_SAMPLE_LIMIT_MS),
        );
        loop {
            if let Some((series_len, name_len)) = self.raw.expected() {
                parser.expect_series(series_len, name_len);
            }
            let entry = parser.next_entry().map_err(|e| parse_error(&url, e))?;
            let Some(entry) = entry else { break };
            match entry {
                Entry::Type { name, kind } => {
                    let m = meta.entry(name.to_string()).or_insert((
                        kind,
                        Arc::from(""),
                        Arc::from(""),
                    ));
                    m.0 = kind;
                }
                Entry::Help { name, text } => {
                    let m = meta.entry(name.to_string()).or_insert((
                        MetricKind::Unknown,
                        Arc::from(""),
                        Arc::from(""),
                    ));
                    m.1 = Arc::from(&*text);
                }
                Entry::Unit { name, unit } => {
                    let m = meta.entry(name.to_string()).or_insert((
                        MetricKind::Unknown,
                        Arc::from(""),
                        Arc::from(""),
                    ));
                    m.2 = Arc::from(unit);
                }
                Entry::Sample(mut s) => {
                    scraped += 1;
                    let mut key = raw_key(s.series);
                    let mut found = self.raw.find(key);
                    if found.is_none() && s.guessed {
                        // Not the series guessed, nor any known one: scan the line.
                        match parser.reparse().map_err(|e| parse_error(&url, e))? {
                            Some(Entry::Sample(scanned)) => s = scanned,
                            // The same line, read in full: a sample again.
                            _ => {
                                return Err(ScrapeError::Unstable {
                                    url: url.clone(),
                                    line: parser.line(),
                                })
                            }
                        }
                        key = raw_key(s.series);
                        found = self.raw.find(key);
                    }
                    let slot = match found {
                        Some(slot) => slot,
                        None => {
                            parser.take_labels().map_err(|e| parse_error(&url, e))?;
                            let labels = parser.label_pairs();
                            let e = self.label_series(s.name, labels).map_err(|reason| {
                                ScrapeError::Series {
                                    url: url.clone(),
                                    line: parser.line(),
                                    reason,
                                }
                            })?;
                            self.raw.insert(key, (s.series.len(), s.name.len()), e)
                        }
                    };
                    let slot = self.raw.slot(slot);
                    let Some(entry) = &slot.entry else { continue };
                    let memo_key = (
                        s.name.as_bytes(),
                        Arc::as_ptr(&entry.name) as *const u8 as usize,
                        Arc::as_ptr(&entry.job.value) as *const u8 as usize,
                        Arc::as_ptr(&entry.instance.value) as *const u8 as usize,
                    );
                    let idx = match last_family {
                        Some((k, i)) if k == memo_key => i,
                        _ => {
                            let i = *family_memo.entry(memo_key).or_insert_with(|| {
                                let (fam_name, kind, help, unit) =
                                    family_of(&meta, s.name, &entry.name);
                                // Shared, so that tracked series compare it by address.
                                let fam_name = self.interner.intern(&fam_name);
                                let fkey = (
                                    fam_name.clone(),
                                    entry.job.value.clone(),
                                    entry.instance.value.clone(),
                                );
                                *family_index.entry(fkey).or_insert_with(|| {
                                    let size = self.family_sizes.get(families.len());
                                    families.push(MetricFamily {
                                        name: fam_name,
                                        kind,
                                        help,
                                        unit,
                                        samples: Vec::with_capacity(size.copied().unwrap_or(0)),
                                    });
                                    families.len() - 1
                                })
                            });
                            last_family = Some((memo_key, i));
                            i
                        }
                    };
                    let explicit = s.timestamp_ms.is_some() && self.cfg.honor_timestamps;
                    if explicit && s.timestamp_ms.is_some_and(|t| t < too_old || t > too_new) {
                        out_of_bounds += 1;
                        continue;
                    }
                    let found = self.tracks.find(slot.track, entry);
                    match found.map(|i| (i, self.tracks.get_mut(i))) {
                        // A duplicate series in one body: the first sample wins.
                        Some((_, t)) if t.seen == generation => continue,
                        Some((i, t)) => {
                            slot.track = i as u32;
                            // Untouched so far in this scrape, so as the last one left it
                            // (a failed scrape empties the map).
                            t.marked_before = t.marks;
                            if !explicit && !t.marked_before {
                                added += 1;
                            }
                            t.seen = generation;
                            t.marks = !explicit;
                            if !Arc::ptr_eq(&t.entry, entry) {
                                t.entry = entry.clone();
                            }
                            let f = &families[idx];
                            if !Arc::ptr_eq(&t.family, &f.name) {
                                t.family = f.name.clone();
                            }
                            t.kind = f.kind;
                        }
                        None => {
                            if !explicit {
                                added += 1;
                            }
                            let i = self.tracks.insert(Tracked {
                                entry: entry.clone(),
                                family: families[idx].name.clone(),
                                kind: families[idx].kind,
                                seen: generation,
                                marks: !explicit,
                                marked_before: false,
                            });
                            slot.track = i as u32;
                        }
                    }
                    post += 1;
                    if self.cfg.sample_limit > 0 && post as u64 > self.cfg.sample_limit {
                        return Err(ScrapeError::SampleLimit {
                            url: url.clone(),
                            limit: self.cfg.sample_limit,
                        });
                    }
                    let t = if explicit {
                        s.timestamp_ms.unwrap_or(ts)
                    } else {
                        ts
                    };
                    families[idx].samples.push(Sample {
                        name: entry.name.clone(),
                        labels: entry.labels.clone(),
                        value: s.value,
                        timestamp_ms: t,
                    });
                }
            }
        }
        // Series gone since the last scrape get a staleness marker, as do series that now
        // carry explicit timestamps (Prometheus stops tracking those).
        let mut stale: Vec<Tracked> = Vec::new();
        self.tracks.retain(|t| {
            if t.seen != generation {
                if t.marks {
                    stale.push(t.clone());
                }
                return false;
            }
            if !t.marks && t.marked_before {
                stale.push(t.clone());
            }
            true
        });
        self.completed = generation;
        self.raw.finish();
        self.family_sizes.clear();
        self.family_sizes
            .extend(families.iter().map(|f| f.samples.len()));
        let mut metrics = assemble(
            families,
            &family_index_owners(&family_index),
            &self.resource_base,
            &self.target.scheme,
        );
        append_stale(
            &mut metrics,
            stale,
            ts,
            &self.resource_base,
            &self.target.scheme,
        );
        Ok(Built {
            metrics,
            scraped,
            post_relabel: post,
            added,
            out_of_bounds,
        })
    }

    /// Staleness markers for every series of the last scrape (failed scrape or removal).
    fn stale_all(&mut self, ts: i64, with_report: bool) -> Metrics {
        // A failed scrape may have touched entries: what counts is how the last successful
        // one left them.
        let completed = self.completed;
        let stale: Vec<Tracked> = self
            .tracks
            .take()
            .into_iter()
            .filter(|t| {
                if t.seen == completed {
                    t.marks
                } else {
                    t.marked_before
                }
            })
            .collect();
        let mut m = Metrics::default();
        append_stale(&mut m, stale, ts, &self.resource_base, &self.target.scheme);
        if with_report {
            let nan = stale_nan();
            self.append_report_values(&mut m, ts, [nan; 5]);
        }
        m
    }

    #[allow(clippy::too_many_arguments)]
    fn append_report(
        &self,
        m: &mut Metrics,
        ts: i64,
        up: f64,
        duration: Duration,
        scraped: usize,
        post: usize,
        added: usize,
    ) {
        self.append_report_values(
            m,
            ts,
            [
                up,
                duration.as_secs_f64(),
                scraped as f64,
                post as f64,
                added as f64,
            ],
        );
    }

    fn append_report_values(&self, m: &mut Metrics, ts: i64, values: [f64; 5]) {
        const NAMES: [(&str, &str); 5] = [
            ("up", "The scraping was successful"),
            ("scrape_duration_seconds", "Duration of the scrape"),
            (
                "scrape_samples_scraped",
                "The number of samples the target exposed",
            ),
            (
                "scrape_samples_post_metric_relabeling",
                "The number of samples remaining after metric relabeling was applied",
            ),
            (
                "scrape_series_added",
                "The approximate number of new series in this scrape",
            ),
        ];
        // Report series carry the target labels (job and instance go to the resource).
        let labels = Labels::from_pairs(
            self.target_labels
                .iter()
                .filter(|(k, _)| k != "job" && k != "instance")
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let fams: Vec<MetricFamily> = NAMES
            .iter()
            .zip(values)
            .map(|((name, help), v)| MetricFamily {
                name: Arc::from(*name),
                kind: MetricKind::Gauge,
                help: Arc::from(*help),
                unit: Arc::from(""),
                samples: vec![Sample {
                    name: Arc::from(*name),
                    labels: labels.clone(),
                    value: v,
                    timestamp_ms: ts,
                }],
            })
            .collect();
        let rm = resource_slot(
            m,
            self.target.job(),
            self.target.instance(),
            &self.target.scheme,
            &self.resource_base,
        );
        rm.families.extend(fams);
    }
}

/// What the scrape loops of one job share.
#[derive(Clone)]
pub struct LoopShared {
    pub connector: Connector,
    pub out: Fanout,
    pub telemetry: SharedTelemetry,
    pub registry: TargetRegistry,
    pub receiver: String,
    pub interner: Arc<Interner>,
    /// Memory limiters of the receiver's pipelines: while one is closed, scrapes are skipped.
    pub gates: crate::processors::memory_limiter::SharedGates,
}

/// Whether a stop is a removal (staleness markers) or a shutdown/reload (none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Running,
    Removed,
    Shutdown,
}

struct Built {
    metrics: Metrics,
    scraped: usize,
    post_relabel: usize,
    added: usize,
    out_of_bounds: usize,
}

/// The scrape cache's key for a series' raw bytes.
fn raw_key(series: &[u8]) -> [u64; 2] {
    let hash = xxhash_rust::xxh3::xxh3_128(series);
    [(hash >> 64) as u64, hash as u64]
}

fn parse_error(url: &str, e: crate::model::exposition::ParseError) -> ScrapeError {
    ScrapeError::Parse {
        url: url.to_string(),
        line: e.line,
        message: e.message,
    }
}
