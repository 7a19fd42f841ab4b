//! Helpers the end-to-end benchmarks share: child processes, ports, HTTP GETs, medians.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let hz = 100.0; // USER_HZ on Linux
    (ticks(11) + ticks(12)) / hz
}

pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until each process uses under 5 % of a core over a second (at most `limit`):
/// a server still digesting an ingest answers queries slower than it would in service.
pub async fn settle(pids: &[u32], limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = pids
            .iter()
            .zip(&before)
            .any(|(p, b)| cpu_seconds(*p) - b > 0.05);
        if !busy {
            return;
        }
    }
}

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub async fn get(url: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    match client.get(url.parse().expect("url")).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(_) => (0, String::new()),
    }
}

#[path = "../../tests/common/query_escape.rs"]
mod query_escape;
/// Query parameters escaped as Flagger's Go client does.
pub use query_escape::go_query_escape as escape;

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The command that runs an agent binary on a config file. `MM_BIN` runs another build
/// instead (say, one being tuned, against the one cargo built). For profiling, e.g.
/// `MM_PROFILE_WITH="heaptrack -o /tmp/mm"`, the agent runs under the tool, and a bench's
/// figures then describe the tool's process, not the agent.
pub fn agent_command(bin: impl AsRef<std::ffi::OsStr>, config: &std::path::Path) -> Command {
    let bin = std::env::var_os("MM_BIN").unwrap_or_else(|| bin.as_ref().to_owned());
    let mut c = match std::env::var("MM_PROFILE_WITH") {
        Ok(tool) if !tool.trim().is_empty() => {
            let mut words = tool.split_whitespace();
            let mut c = Command::new(words.next().unwrap_or_default());
            c.args(words).arg(bin);
            c
        }
        _ => Command::new(bin),
    };
    c.arg("--config").arg(config);
    c
}

/// Starts an agent binary on a config file, output discarded; killed when dropped.
pub fn spawn_agent(bin: &std::path::Path, config: &std::path::Path) -> Proc {
    Proc(
        agent_command(bin, config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("meshmetrics"),
    )
}

/// Asks each address the instant `query` at `at`, `repeats` times in turn; returns each one's
/// median latency and last answer.
pub async fn time_query(
    addrs: &[&str],
    query: &str,
    at: &str,
    repeats: usize,
) -> Vec<(Duration, String)> {
    let mut lat = vec![Vec::new(); addrs.len()];
    let mut answers = vec![String::new(); addrs.len()];
    for _ in 0..repeats {
        for (i, addr) in addrs.iter().enumerate() {
            let url = format!(
                "http://{addr}/api/v1/query?query={}&time={at}",
                escape(query)
            );
            let t = Instant::now();
            let (s, body) = get(&url).await;
            lat[i].push(t.elapsed());
            assert_eq!(s, 200, "{body}");
            answers[i] = body;
        }
    }
    lat.into_iter().map(median).zip(answers).collect()
}

/// Same series with values equal to 1e-9 relative (summation order may differ).
pub fn same_answer(a: &str, b: &str) -> bool {
    let value = |s: &str| -> Vec<(String, f64)> {
        let v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
        let mut out: Vec<(String, f64)> = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let x = r["value"][1].as_str().and_then(|x| x.parse().ok());
                (r["metric"].to_string(), x.unwrap_or(f64::NAN))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let (a, b) = (value(a), value(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            x.0 == y.0
                && ((x.1.is_nan() && y.1.is_nan())
                    || (x.1 - y.1).abs() <= 1e-9 * x.1.abs().max(y.1.abs()))
        })
}

/// The installed Prometheus's `major.minor` (for `prometheus_compat`, so that both answer
/// alike where releases differ), `"3"` when it cannot be read.
pub fn prometheus_compat() -> String {
    let out = Command::new("prometheus").arg("--version").output();
    let text = out
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default();
    let v = text.split("version ").nth(1).unwrap_or("");
    let mut it = v.split(['.', '+', ' ']);
    match (it.next(), it.next()) {
        (Some(major), Some(minor)) if !major.is_empty() => format!("{major}.{minor}"),
        _ => "3".into(),
    }
}

/// A real Prometheus server (Debian package `prometheus`) on `addr`, with its config file and
/// a data directory under `dir`; killed when dropped.
pub fn spawn_prometheus(dir: &std::path::Path, config: &str, addr: &str) -> Proc {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).expect("write prometheus.yml");
    Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus on PATH"),
    )
}
