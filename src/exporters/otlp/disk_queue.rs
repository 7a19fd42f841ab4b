//! The persistent sending queue (`sending_queue: {storage: file_storage}`): each batch is
//! appended to a segment file, checksummed, before the exporter accepts it; it is deleted only
//! after the backend accepted it (or refused it for good). A restart, crash included, replays
//! whatever was not acknowledged: delivery is at-least-once.
//!
//! Layout, one directory per exporter:
//! - `seg-<id>.log`: records `[len u32][crc32 u32][seq u64][points u32][payload]` (little
//!   endian; the CRC covers seq, points and payload; the payload is the protobuf
//!   `ExportMetricsServiceRequest`). A torn record at the tail of the last segment (a crash
//!   mid-write) is cut off on open.
//! - `seg-<id>.acks`: the sequence numbers acknowledged so far (u64 each). A segment whose
//!   records are all acknowledged is deleted with its acks file.
//!
//! When the disk bound is reached or a write fails (disk full), batches are kept in memory
//! instead, up to `memory_capacity`, and the condition is logged; beyond that they are refused.
//! Without `storage` the same queue runs in memory only ([`DiskQueue::in_memory`]).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::Notify;

use super::Batch;

const HEADER: usize = 20;
/// A new segment starts beyond this size, so acknowledged data is freed in steps this big.
const SEGMENT_BYTES: u64 = 4 << 20;

/// Where a queued item lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Disk {
        seq: u64,
        segment: u64,
        offset: u64,
        len: u32,
        points: u32,
        /// When it was queued (wall clock, ms; a replayed batch: its segment's last write).
        queued_ms: i64,
    },
    Memory {
        queued_ms: i64,
    },
}

impl Item {
    fn queued_ms(&self) -> i64 {
        match *self {
            Item::Disk { queued_ms, .. } | Item::Memory { queued_ms } => queued_ms,
        }
    }
}

/// Where `push` put a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Disk,
    /// Disk bound reached or the write failed; kept in memory (lost if the process dies).
    Memory,
}

/// What `open` found on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub batches: usize,
    pub points: u64,
    /// Bytes of torn or corrupt records cut off.
    pub dropped_bytes: u64,
}

struct Segment {
    live: usize,
    bytes: u64,
    acks: Option<File>,
}

struct Writer {
    id: u64,
    file: File,
    size: u64,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    writer: Option<Writer>,
    queue: VecDeque<Item>,
    memory: VecDeque<(i64, Batch)>,
    /// When each batch being sent now was queued (a multiset): the queue's age counts them.
    in_flight: BTreeMap<i64, usize>,
    next_seq: u64,
    next_segment: u64,
    bytes: u64,
    closed: bool,
    /// Whether writes are failing: logged once per episode. An episode ends once writes have
    /// succeeded for [`RECOVERED_AFTER_MS`] after the last failure, so a disk that flaps (a
    /// batch fits in the room a cut-off write left, the next does not) is one episode.
    degraded: bool,
    last_failure_ms: i64,
}

/// How long writes must succeed after a failure before a full disk counts as recovered.
const RECOVERED_AFTER_MS: i64 = 10_000;

pub struct DiskQueue {
    /// False for a queue in memory only (no `storage`): same queue, no files.
    on_disk: bool,
    dir: PathBuf,
    fsync: bool,
    max_bytes: u64,
    memory_capacity: usize,
    inner: Mutex<Inner>,
    ready: Notify,
}

fn seg_path(dir: &Path, id: u64, ext: &str) -> PathBuf {
    dir.join(format!("seg-{id:020}.{ext}"))
}

fn crc(seq: u64, points: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&points.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Parses the records of one segment; returns them and the offset where valid data ends.
fn scan(data: &[u8]) -> (Vec<(u64, u64, u32, u32)>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER {
        let h = &data[pos..pos + HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let sum = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let mut seq_b = [0u8; 8];
        seq_b.copy_from_slice(&h[8..16]);
        let seq = u64::from_le_bytes(seq_b);
        let points = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        let end = pos + HEADER + len;
        if end > data.len() || crc(seq, points, &data[pos + HEADER..end]) != sum {
            break;
        }
        out.push((seq, pos as u64, len as u32, points));
        pos = end;
    }
    (out, pos)
}

/// What went wrong with the queue's files.
#[derive(Debug)]
pub enum QueueError {
    /// A file or directory could not be made, read or written (`doing` says which).
    Io {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A record's bytes do not match the checksum written with them.
    Corrupt { path: PathBuf, offset: u64 },
    /// A batch kept in memory was asked for as one on disk.
    NotOnDisk,
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::Io {
                doing,
                path,
                source,
            } => write!(f, "{doing} {}: {source}", path.display()),
            QueueError::Corrupt { path, offset } => {
                write!(f, "{}: checksum mismatch at {offset}", path.display())
            }
            QueueError::NotOnDisk => f.write_str("not a disk item"),
        }
    }
}

impl std::error::Error for QueueError {}

/// An I/O error on `path`, while `doing` something to it.
fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> QueueError + 'a {
    move |source| QueueError::Io {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

impl DiskQueue {
    /// Opens (creating) the queue directory and loads what earlier runs left unacknowledged.
    pub fn open(
        dir: &Path,
        fsync: bool,
        max_bytes: u64,
        memory_capacity: usize,
    ) -> Result<(DiskQueue, Replayed), QueueError> {
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(io("reading", dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut inner = Inner {
            segments: BTreeMap::new(),
            writer: None,
            queue: VecDeque::new(),
            memory: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            next_segment: ids.last().map_or(0, |l| l + 1),
            bytes: 0,
            closed: false,
            degraded: false,
            last_failure_ms: 0,
        };
        let mut replayed = Replayed::default();
        for (i, &id) in ids.iter().enumerate() {
            let path = seg_path(dir, id, "log");
            let data = fs::read(&path).map_err(io("reading", &path))?;
            let (records, valid) = scan(&data);
            if valid < data.len() {
                let cut = (data.len() - valid) as u64;
                replayed.dropped_bytes += cut;
                if i + 1 == ids.len() {
                    tracing::warn!(file = %path.display(), bytes = cut, "persistent queue: cutting off a torn write at the tail");
                } else {
                    tracing::error!(file = %path.display(), bytes = cut, "persistent queue: corrupt record; the rest of this segment is skipped");
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("opening", &path))?;
                f.set_len(valid as u64).map_err(io("truncating", &path))?;
            }
            let written_ms = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(crate::clock::now_ms, |d| d.as_millis() as i64);
            let acks_path = seg_path(dir, id, "acks");
            // A kill mid-append leaves part of an ack: cut it, or every later ack would be
            // read out of step.
            if let Ok(m) = fs::metadata(&acks_path) {
                if m.len() % 8 != 0 {
                    if let Ok(f) = OpenOptions::new().write(true).open(&acks_path) {
                        let _ = f.set_len(m.len() - m.len() % 8);
                    }
                }
            }
            let acked: HashSet<u64> = fs::read(&acks_path)
                .map(|b| {
                    b.chunks_exact(8)
                        .map(|c| {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(c);
                            u64::from_le_bytes(a)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut live = 0;
            for (seq, offset, len, points) in records {
                inner.next_seq = inner.next_seq.max(seq + 1);
                if acked.contains(&seq) {
                    continue;
                }
                live += 1;
                replayed.batches += 1;
                replayed.points += u64::from(points);
                inner.queue.push_back(Item::Disk {
                    seq,
                    segment: id,
                    offset,
                    len,
                    points,
                    queued_ms: written_ms,
                });
            }
            if live == 0 {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(&acks_path);
                continue;
            }
            inner.bytes += valid as u64;
            inner.segments.insert(
                id,
                Segment {
                    live,
                    bytes: valid as u64,
                    acks: None,
                },
            );
        }
        Ok((
            DiskQueue {
                on_disk: true,
                dir: dir.to_path_buf(),
                fsync,
                max_bytes,
                memory_capacity,
                inner: Mutex::new(inner),
                ready: Notify::new(),
            },
            replayed,
        ))
    }

    /// A queue of `capacity` batches in memory, for exporters without `storage`.
    pub fn in_memory(capacity: usize) -> DiskQueue {
        DiskQueue {
            on_disk: false,
            dir: PathBuf::new(),
            fsync: false,
            max_bytes: 0,
            memory_capacity: capacity,
            inner: Mutex::new(Inner {
                segments: BTreeMap::new(),
                writer: None,
                queue: VecDeque::new(),
                memory: VecDeque::new(),
                in_flight: BTreeMap::new(),
                next_seq: 0,
                next_segment: 0,
                bytes: 0,
                closed: false,
                degraded: false,
                last_failure_ms: 0,
            }),
            ready: Notify::new(),
        }
    }

    /// Whether batches are kept on disk (and so survive a restart).
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queued batches (on disk and in memory), not counting those being sent.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.queue.len() + g.memory.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write_record(&self, g: &mut Inner, seq: u64, batch: &Batch) -> std::io::Result<Item> {
        let payload = &batch.request;
        let points = u32::try_from(batch.points).unwrap_or(u32::MAX);
        let size = (HEADER + payload.len()) as u64;
        if g.bytes + size > self.max_bytes {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("queue holds {} bytes, bound {}", g.bytes, self.max_bytes),
            ));
        }
        if g.writer.as_ref().is_none_or(|w| w.size >= SEGMENT_BYTES) {
            if let Some(old) = g.writer.take() {
                self.release_if_done(g, old.id);
            }
            let id = g.next_segment;
            g.next_segment += 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(seg_path(&self.dir, id, "log"))?;
            g.segments.insert(
                id,
                Segment {
                    live: 0,
                    bytes: 0,
                    acks: None,
                },
            );
            g.writer = Some(Writer { id, file, size: 0 });
        }
        let w = g.writer.as_mut().ok_or(std::io::ErrorKind::Other)?;
        let mut rec = Vec::with_capacity(size as usize);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc(seq, points, payload).to_le_bytes());
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(&points.to_le_bytes());
        rec.extend_from_slice(payload);
        let offset = w.size;
        let written = w.file.write_all(&rec).and_then(|_| {
            if self.fsync {
                w.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut what reached the file (a full disk takes part of a record), so no segment
            // holds a torn record mid-file, and start a fresh segment next time.
            let _ = w.file.set_len(offset);
            let id = w.id;
            g.writer = None;
            self.release_if_done(g, id);
            return Err(e);
        }
        w.size += size;
        let id = w.id;
        if let Some(s) = g.segments.get_mut(&id) {
            s.live += 1;
            s.bytes += size;
        }
        g.bytes += size;
        Ok(Item::Disk {
            seq,
            segment: id,
            offset,
            len: payload.len() as u32,
            points,
            queued_ms: crate::clock::now_ms(),
        })
    }

    /// Queues a batch: on disk when possible, else in memory; `Err` when both are full.
    pub fn push(&self, batch: Batch) -> Result<Stored, Batch> {
        let mut g = self.lock();
        if !self.on_disk {
            if g.memory.len() >= self.memory_capacity {
                return Err(batch);
            }
            g.memory.push_back((crate::clock::now_ms(), batch));
            drop(g);
            self.ready.notify_one();
            return Ok(Stored::Memory);
        }
        let seq = g.next_seq;
        match self.write_record(&mut g, seq, &batch) {
            Ok(item) => {
                g.next_seq += 1;
                g.queue.push_back(item);
                if g.degraded && crate::clock::now_ms() - g.last_failure_ms >= RECOVERED_AFTER_MS {
                    g.degraded = false;
                    tracing::info!(dir = %self.dir.display(), "persistent queue: writing to disk again");
                }
                drop(g);
                self.ready.notify_one();
                Ok(Stored::Disk)
            }
            Err(e) => {
                g.last_failure_ms = crate::clock::now_ms();
                if !g.degraded {
                    g.degraded = true;
                    tracing::error!(dir = %self.dir.display(), error = %e, "persistent queue: cannot write to disk; keeping batches in memory until it can");
                }
                if g.memory.len() >= self.memory_capacity {
                    return Err(batch);
                }
                g.memory.push_back((crate::clock::now_ms(), batch));
                drop(g);
                self.ready.notify_one();
                Ok(Stored::Memory)
            }
        }
    }

    fn read(&self, item: Item) -> Result<Batch, QueueError> {
        let Item::Disk {
            seq,
            segment,
            offset,
            len,
            points,
            ..
        } = item
        else {
            return Err(QueueError::NotOnDisk);
        };
        let path = seg_path(&self.dir, segment, "log");
        let mut f = File::open(&path).map_err(io("opening", &path))?;
        f.seek(SeekFrom::Start(offset + HEADER as u64))
            .map_err(io("reading", &path))?;
        let mut payload = vec![0u8; len as usize];
        f.read_exact(&mut payload).map_err(io("reading", &path))?;
        let mut head = [0u8; HEADER];
        f.seek(SeekFrom::Start(offset))
            .map_err(io("reading", &path))?;
        f.read_exact(&mut head).map_err(io("reading", &path))?;
        if u32::from_le_bytes([head[4], head[5], head[6], head[7]]) != crc(seq, points, &payload) {
            return Err(QueueError::Corrupt { path, offset });
        }
        // Sent as it is: the checksum vouches that these are the bytes that were queued.
        Ok(Batch {
            request: payload.into(),
            points: points as usize,
        })
    }

    /// The next batch to send, oldest first (disk before memory); `None` once closed and
    /// empty.
    pub async fn pop(&self) -> Option<(Item, Batch)> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let mut g = self.lock();
                if let Some(item) = g.queue.pop_front() {
                    Some(Ok(item))
                } else if let Some(b) = g.memory.pop_front() {
                    Some(Err(b))
                } else if g.closed {
                    return None;
                } else {
                    None
                }
            };
            match next {
                Some(Ok(item)) => {
                    self.lock().start_flight(item.queued_ms());
                    match self.read(item) {
                        Ok(batch) => return Some((item, batch)),
                        Err(e) => {
                            tracing::error!(error = %e, "persistent queue: unreadable batch skipped");
                            self.ack(item);
                        }
                    }
                }
                Some(Err((queued_ms, batch))) => {
                    self.lock().start_flight(queued_ms);
                    return Some((Item::Memory { queued_ms }, batch));
                }
                None => notified.await,
            }
        }
    }

    /// The batch is done with (delivered, or refused for good): forget it.
    pub fn ack(&self, item: Item) {
        let mut g = self.lock();
        g.end_flight(item.queued_ms());
        let Item::Disk { seq, segment, .. } = item else {
            return;
        };
        let writer = g.writer.as_ref().map(|w| w.id);
        let Some(s) = g.segments.get_mut(&segment) else {
            return;
        };
        s.live = s.live.saturating_sub(1);
        if s.acks.is_none() {
            s.acks = OpenOptions::new()
                .create(true)
                .append(true)
                .open(seg_path(&self.dir, segment, "acks"))
                .ok();
        }
        if let Some(f) = s.acks.as_mut() {
            // Not synced: a lost ack only means one more delivery after a crash.
            let _ = f.write_all(&seq.to_le_bytes());
        }
        if s.live == 0 {
            // Everything in it is done: free it now (closing it if it is being written; the
            // next batch starts a new segment), so the disk bound counts only live data.
            if writer == Some(segment) {
                g.writer = None;
            }
            self.release_if_done(&mut g, segment);
        }
    }

    fn release_if_done(&self, g: &mut Inner, segment: u64) {
        if g.segments.get(&segment).is_some_and(|s| s.live == 0) {
            if let Some(s) = g.segments.remove(&segment) {
                g.bytes = g.bytes.saturating_sub(s.bytes);
            }
            let _ = fs::remove_file(seg_path(&self.dir, segment, "log"));
            let _ = fs::remove_file(seg_path(&self.dir, segment, "acks"));
        }
    }

    /// Puts a batch that could not be delivered yet back at the end of the queue.
    pub fn requeue(&self, item: Item, batch: Batch) {
        let mut g = self.lock();
        g.end_flight(item.queued_ms());
        match item {
            Item::Disk { .. } => g.queue.push_back(item),
            Item::Memory { queued_ms } => g.memory.push_back((queued_ms, batch)),
        }
        drop(g);
        self.ready.notify_one();
    }

    /// No more pushes; `pop` returns `None` once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// When the oldest batch not yet delivered (queued or being sent) was queued: a walk
    /// over the queue, as retries put batches back out of order.
    pub fn oldest_queued_ms(&self) -> Option<i64> {
        let g = self.lock();
        let queued = g.queue.iter().map(Item::queued_ms);
        let memory = g.memory.iter().map(|(t, _)| *t);
        let flying = g.in_flight.keys().next().copied();
        queued.chain(memory).chain(flying).min()
    }
}

impl Inner {
    fn start_flight(&mut self, queued_ms: i64) {
        *self.in_flight.entry(queued_ms).or_insert(0) += 1;
    }

    fn end_flight(&mut self, queued_ms: i64) {
        if let Some(n) = self.in_flight.get_mut(&queued_ms) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&queued_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
    use prost::Message;

    fn batch(n: usize) -> Batch {
        Batch {
            request: ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    schema_url: format!("batch-{n}"),
                    ..Default::default()
                }],
            }
            .encode_to_vec()
            .into(),
            points: n,
        }
    }

    fn id(b: &Batch) -> String {
        ExportMetricsServiceRequest::decode(b.request.clone())
            .expect("a request")
            .resource_metrics[0]
            .schema_url
            .clone()
    }

    #[tokio::test]
    async fn replays_unacknowledged_batches_after_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, r) = DiskQueue::open(dir.path(), true, 1 << 30, 10).expect("open");
        assert_eq!(r, Replayed::default());
        for i in 0..5 {
            assert_eq!(q.push(batch(i)).ok(), Some(Stored::Disk));
        }
        let (a, b0) = q.pop().await.expect("item");
        assert_eq!(id(&b0), "batch-0");
        q.ack(a);
        let (_in_flight, b1) = q.pop().await.expect("item");
        assert_eq!(id(&b1), "batch-1");
        drop(q); // a crash: batch-1 was being sent, never acknowledged
        let (q, r) = DiskQueue::open(dir.path(), true, 1 << 30, 10).expect("reopen");
        assert_eq!(r.batches, 4);
        assert_eq!(r.points, 1 + 2 + 3 + 4);
        let mut seen = Vec::new();
        q.close();
        while let Some((item, b)) = q.pop().await {
            seen.push(id(&b));
            q.ack(item);
        }
        assert_eq!(seen, ["batch-1", "batch-2", "batch-3", "batch-4"]);
        // Everything acknowledged: the next run finds nothing and the files are gone.
        drop(q);
        let (_, r) = DiskQueue::open(dir.path(), true, 1 << 30, 10).expect("reopen");
        assert_eq!(r.batches, 0);
        let left: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_torn_ack_is_cut_so_later_acks_stay_in_step() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, _) = DiskQueue::open(dir.path(), false, 1 << 30, 10).expect("open");
        for i in 0..4 {
            q.push(batch(i)).expect("push");
        }
        let (a, _) = q.pop().await.expect("item");
        q.ack(a);
        drop(q);
        let acks = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "acks"))
            .expect("acks file");
        // A kill in the middle of appending the second ack.
        let mut f = OpenOptions::new().append(true).open(&acks).expect("open");
        f.write_all(&[1, 0, 0]).expect("torn ack");
        drop(f);
        let (q, r) = DiskQueue::open(dir.path(), false, 1 << 30, 10).expect("reopen");
        assert_eq!(r.batches, 3);
        let (a, b) = q.pop().await.expect("item");
        assert_eq!(id(&b), "batch-1");
        q.ack(a);
        drop(q);
        let (q, r) = DiskQueue::open(dir.path(), false, 1 << 30, 10).expect("reopen");
        assert_eq!(r.batches, 2, "the ack after the torn one was read in step");
        let (_, b) = q.pop().await.expect("item");
        assert_eq!(id(&b), "batch-2");
    }

    #[tokio::test]
    async fn the_oldest_batch_counts_while_it_is_being_sent() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, _) = DiskQueue::open(dir.path(), false, 1 << 30, 10).expect("open");
        assert_eq!(q.oldest_queued_ms(), None);
        q.push(batch(0)).expect("push");
        let first = q.oldest_queued_ms().expect("queued");
        std::thread::sleep(std::time::Duration::from_millis(5));
        q.push(batch(1)).expect("push");
        let (item, b) = q.pop().await.expect("item");
        assert_eq!(q.oldest_queued_ms(), Some(first), "in flight still counts");
        q.requeue(item, b);
        assert_eq!(q.oldest_queued_ms(), Some(first), "requeued keeps its age");
        let (younger, b) = q.pop().await.expect("item");
        assert_eq!(id(&b), "batch-1", "requeued went to the back");
        let (older, _) = q.pop().await.expect("item");
        q.ack(older);
        assert!(q.oldest_queued_ms().expect("one left") > first);
        q.ack(younger);
        assert_eq!(q.oldest_queued_ms(), None);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, _) = DiskQueue::open(dir.path(), false, 1 << 30, 10).expect("open");
        for i in 0..3 {
            q.push(batch(i)).expect("push");
        }
        drop(q);
        let seg = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("segment");
        // A crash in the middle of appending a fourth record.
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).expect("torn write");
        drop(f);
        let (q, r) = DiskQueue::open(dir.path(), false, 1 << 30, 10).expect("reopen");
        assert_eq!(r.batches, 3);
        assert_eq!(r.dropped_bytes, 7);
        q.close();
        let mut n = 0;
        while let Some((item, _)) = q.pop().await {
            q.ack(item);
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn over_the_disk_bound_batches_go_to_memory_then_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let one = (HEADER + batch(0).request.len()) as u64;
        let (q, _) = DiskQueue::open(dir.path(), false, one * 2, 1).expect("open");
        assert_eq!(q.push(batch(0)).ok(), Some(Stored::Disk));
        assert_eq!(q.push(batch(1)).ok(), Some(Stored::Disk));
        assert_eq!(q.push(batch(2)).ok(), Some(Stored::Memory));
        assert!(q.push(batch(3)).is_err(), "both full: refused");
        let mut order = Vec::new();
        q.close();
        while let Some((item, b)) = q.pop().await {
            order.push(id(&b));
            q.ack(item);
        }
        assert_eq!(order, ["batch-0", "batch-1", "batch-2"]);
        assert_eq!(q.disk_bytes(), 0);
    }
}
