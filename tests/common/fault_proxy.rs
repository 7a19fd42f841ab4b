//! A fault-injecting TCP proxy: the network faults kernel traffic shaping would give, built in
//! user space. It sits between the agent and anything it talks to (a backend, a target, a
//! peer) and can add latency, cap bandwidth, accept and then never answer, reset connections
//! part way through, stall a response, or leave the connections of the moment half-open
//! (silent, never closed) while new ones pass.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// What the proxy does to traffic. Read at each accept (connection-level faults) and for each
/// chunk forwarded (latency, bandwidth).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added to every chunk, each way, as a delay line (throughput is kept).
    pub latency: Duration,
    /// Bytes per second each way, shared by all connections.
    pub bandwidth: Option<u64>,
    /// New connections are accepted, and what they send is read and never answered; the
    /// proxy never closes them.
    pub blackhole: bool,
    /// New connections are reset at once.
    pub refuse: bool,
    /// Every second connection (the 1st, 3rd, ...) is reset once it has carried this many
    /// bytes towards the upstream: mid-request.
    pub reset_half_after: Option<u64>,
    /// Responses are cut by a reset after this many bytes.
    pub reset_response_after: Option<u64>,
    /// Responses stop after this many bytes; the connection stays open and silent.
    pub stall_response_after: Option<u64>,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    /// Connections older than this generation have gone half-open.
    frozen_below: AtomicU64,
    /// Connections younger than this generation are closed (FIN both ways) at their next chunk.
    closed_below: AtomicU64,
    generation: AtomicU64,
    connections: AtomicU64,
    resets: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// How long each blackholed connection lived until its client gave up on it.
    blackholed: Mutex<Vec<Duration>>,
    /// When each direction's bandwidth is next free.
    next_free: [Mutex<Instant>; 2],
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: watch::Sender<()>,
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Up = 0,
    Down = 1,
}

enum End {
    /// The sender closed its side: pass the FIN on.
    Eof,
    Reset,
    /// Silent from now on: hold the sockets open and forward nothing.
    Freeze,
    Close,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 forwarding to `upstream`, without faults until told.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            frozen_below: AtomicU64::new(0),
            closed_below: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            blackholed: Mutex::new(Vec::new()),
            next_free: [Mutex::new(Instant::now()), Mutex::new(Instant::now())],
        });
        let (tx, rx) = watch::channel(());
        let s = shared.clone();
        tokio::spawn(async move {
            let mut stop = rx.clone();
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.changed() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let n = s.connections.fetch_add(1, Ordering::SeqCst);
                let generation = s.generation.load(Ordering::SeqCst);
                let (s, mut stop) = (s.clone(), rx.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection(s, client, n, generation) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        FaultProxy {
            addr,
            shared,
            _shutdown: tx,
        }
    }

    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults") = faults;
    }

    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.faults.lock().expect("faults"));
    }

    /// Every connection open now goes silent, without a FIN or a reset (a vanished node, a
    /// NAT that forgot the flow); new connections are not affected.
    pub fn half_open_existing(&self) {
        let g = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.frozen_below.store(g, Ordering::SeqCst);
    }

    /// Every connection open now is closed (FIN) at its next chunk either way.
    pub fn close_existing(&self) {
        let g = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.closed_below.store(g, Ordering::SeqCst);
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Bytes forwarded towards the upstream so far.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::SeqCst)
    }

    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::SeqCst)
    }

    /// Lifetimes of the blackholed connections their clients have closed so far.
    pub fn blackholed_lifetimes(&self) -> Vec<Duration> {
        self.shared.blackholed.lock().expect("lifetimes").clone()
    }
}

#[allow(deprecated)] // a zero linger never blocks: the close sends RST instead of FIN
fn reset(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

async fn connection(s: Arc<Shared>, client: TcpStream, n: u64, generation: u64) {
    let faults = s.faults.lock().expect("faults").clone();
    let _ = client.set_nodelay(true);
    if faults.refuse {
        s.resets.fetch_add(1, Ordering::SeqCst);
        reset(&client);
        return;
    }
    if faults.blackhole {
        let opened = Instant::now();
        let mut client = client;
        let mut sink = vec![0u8; 4096];
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        s.blackholed
            .lock()
            .expect("lifetimes")
            .push(opened.elapsed());
        return;
    }
    let Ok(upstream) = TcpStream::connect(s.upstream).await else {
        reset(&client);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let reset_up_after = faults.reset_half_after.filter(|_| n.is_multiple_of(2));
    let end = {
        let up = pump(&s, &mut cr, &mut uw, Dir::Up, generation, reset_up_after);
        let down = pump(&s, &mut ur, &mut cw, Dir::Down, generation, None);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                e = &mut up, if !up_done => { up_done = true; e }
                e = &mut down, if !down_done => { down_done = true; e }
            };
            match end {
                End::Eof if up_done && down_done => break End::Eof,
                End::Eof => continue,
                other => break other,
            }
        }
    };
    match end {
        End::Reset => {
            s.resets.fetch_add(1, Ordering::SeqCst);
            reset(cw.as_ref());
            reset(uw.as_ref());
        }
        End::Freeze => std::future::pending::<()>().await,
        End::Eof | End::Close => {}
    }
}

/// Forwards one direction until EOF or a fault ends it. Chunks go through a delay line (the
/// latency) and the shared bandwidth allowance before they are written.
async fn pump(
    s: &Shared,
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    dir: Dir,
    generation: u64,
    reset_after: Option<u64>,
) -> End {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
    // The reader owns the sender: when it ends, the writer drains the delay line and stops.
    let read = async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return End::Eof,
                Ok(n) => n,
            };
            if generation < s.closed_below.load(Ordering::SeqCst) {
                return End::Close;
            }
            if generation < s.frozen_below.load(Ordering::SeqCst) {
                return End::Freeze;
            }
            let latency = s.faults.lock().expect("faults").latency;
            if tx
                .send((Instant::now() + latency, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return End::Eof;
            }
        }
    };
    let write = async move {
        let mut carried = 0u64;
        while let Some((due, mut chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let faults = s.faults.lock().expect("faults").clone();
            if generation < s.frozen_below.load(Ordering::SeqCst) {
                return End::Freeze;
            }
            if let Some(rate) = faults.bandwidth {
                let cost = Duration::from_secs_f64(chunk.len() as f64 / rate.max(1) as f64);
                let until = {
                    let mut next = s.next_free[dir as usize].lock().expect("bucket");
                    let start = (*next).max(Instant::now());
                    *next = start + cost;
                    *next
                };
                tokio::time::sleep_until(until).await;
            }
            let (reset_at, stall_at) = match dir {
                Dir::Up => (reset_after, None),
                Dir::Down => (faults.reset_response_after, faults.stall_response_after),
            };
            let mut end = None;
            if let Some(limit) = reset_at.filter(|l| carried + chunk.len() as u64 > *l) {
                chunk.truncate(limit.saturating_sub(carried) as usize);
                end = Some(End::Reset);
            } else if let Some(limit) = stall_at.filter(|l| carried + chunk.len() as u64 > *l) {
                chunk.truncate(limit.saturating_sub(carried) as usize);
                end = Some(End::Freeze);
            }
            if to.write_all(&chunk).await.is_err() {
                return End::Eof;
            }
            carried += chunk.len() as u64;
            let counter = match dir {
                Dir::Up => &s.bytes_up,
                Dir::Down => &s.bytes_down,
            };
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if let Some(end) = end {
                return end;
            }
        }
        let _ = to.shutdown().await;
        End::Eof
    };
    tokio::pin!(read, write);
    tokio::select! {
        e = &mut write => e,
        e = &mut read => match e {
            // The rest of the delay line still goes out before the FIN.
            End::Eof => write.await,
            other => other,
        },
    }
}
