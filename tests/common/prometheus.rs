//! The real Prometheus server (Debian package `prometheus`), the oracle of query answers.

use std::process::{Child, Command, Stdio};

/// A Prometheus server stopped when dropped.
pub struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn prometheus_version() -> (u32, u32) {
    let out = Command::new("prometheus")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the `prometheus` binary is needed as the oracle (apt-get install prometheus): {e}"
            )
        });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let v = text.split("version ").nth(1).unwrap_or("");
    let mut it = v.split(['.', '+', ' ']);
    let major = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (major, minor)
}

pub fn start_prometheus(scrape_yaml: &str, port: u16) -> Prometheus {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, scrape_yaml).expect("write config");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus { child, _dir: dir }
}
