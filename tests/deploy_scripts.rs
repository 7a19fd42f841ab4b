//! `deploy/scripts/setup-secrets.sh --non-interactive`, run with a recording `kubectl` in
//! front of the real one on PATH: the secrets get the right names and keys, and the values
//! never show in the script's output or in any command line.

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/scripts/setup-secrets.sh"
);

/// A `kubectl` that logs its arguments, answers `create secret ... -o yaml` with the files'
/// contents the way kubectl renders them, and logs what `apply` reads on stdin.
fn fake_kubectl(dir: &Path) {
    let log = dir.join("calls.log");
    let script = format!(
        r#"#!/usr/bin/env bash
echo "ARGS $*" >> {log}
if [[ "$1 $2" == "create namespace" ]]; then echo "kind: Namespace"; exit 0; fi
if [[ "$*" == *"create secret generic"* ]]; then
  echo "kind: Secret"
  for a in "$@"; do
    case "$a" in --from-file=*) kv=${{a#--from-file=}}; echo "  ${{kv%%=*}}: $(base64 -w0 < "${{kv#*=}}")";; esac
  done
  exit 0
fi
if [[ "$1" == "apply" ]]; then echo "STDIN" >> {log}; cat >> {log}; exit 0; fi
exit 0
"#,
        log = log.display()
    );
    let path = dir.join("kubectl");
    std::fs::write(&path, script).expect("write fake kubectl");
    Command::new("chmod")
        .args(["+x"])
        .arg(&path)
        .status()
        .expect("chmod");
}

fn b64(s: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", &format!("printf '%s' '{s}' | base64 -w0")])
        .output()
        .expect("base64");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn setup_secrets_non_interactive() {
    let dir = tempfile::tempdir().expect("tmp");
    fake_kubectl(dir.path());
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg("--non-interactive")
        .env("PATH", path)
        .env("HONEYCOMB_API_KEY", "hcaik_SECRET_honeycomb")
        .env("DYNATRACE_API_TOKEN", "dt0c01.SECRET_dynatrace")
        .env("MESHMETRICS_QUERY_TOKEN", "qt_SECRET_query")
        .env_remove("DYNATRACE_ENVIRONMENT_ID")
        .output()
        .expect("script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("flagger-system/honeycomb-otel-secret: set (api-key)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flagger-system/dynatrace-secret: set (dynatrace_token api-token)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flagger-system/meshmetrics-query-token: set (token, otlp-token)"),
        "{stdout}"
    );
    let log = std::fs::read_to_string(dir.path().join("calls.log")).expect("log");
    assert!(
        log.contains(&format!("token: {}", b64("qt_SECRET_query"))),
        "the façade's token as given: {log}"
    );
    // The OTLP token was not given: a random one, 32 bytes of entropy in base64.
    let otlp = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("otlp-token: "))
        .expect("otlp-token written");
    assert!(otlp.len() >= 40, "{otlp}");
    for secret in ["SECRET_honeycomb", "SECRET_dynatrace", "SECRET_query"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
        for line in log.lines().filter(|l| l.starts_with("ARGS")) {
            assert!(!line.contains(secret), "value on a command line: {line}");
        }
    }
    assert!(log.contains("apply --server-side"), "{log}");
    assert!(
        log.contains(&format!("api-key: {}", b64("hcaik_SECRET_honeycomb"))),
        "{log}"
    );
    for key in ["dynatrace_token", "api-token"] {
        assert!(
            log.contains(&format!("{key}: {}", b64("dt0c01.SECRET_dynatrace"))),
            "{log}"
        );
    }

    // Without values, nothing is written and the script says so.
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg("--non-interactive")
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("HONEYCOMB_API_KEY")
        .env_remove("DYNATRACE_API_TOKEN")
        .env_remove("DYNATRACE_ENVIRONMENT_ID")
        .output()
        .expect("script runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("honeycomb-otel-secret: skipped"),
        "{stdout}"
    );
    assert!(stdout.contains("dynatrace-secret: skipped"), "{stdout}");
}

/// The Dynatrace environment ID becomes the templates' address: written to the env file the
/// dynatrace kustomization reads, in a copy of the tree so the repository stays as it is.
#[test]
fn setup_secrets_sets_the_dynatrace_environment() {
    let tree = tempfile::tempdir().expect("tmp");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for rel in [
        "deploy/scripts/setup-secrets.sh",
        "deploy/flagger/dynatrace/environment.env",
    ] {
        let to = tree.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("dir")).expect("mkdir");
        std::fs::copy(root.join(rel), &to).expect("copy");
    }
    fake_kubectl(tree.path());
    let path = format!(
        "{}:{}",
        tree.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |id: &str| {
        Command::new("bash")
            .arg(tree.path().join("deploy/scripts/setup-secrets.sh"))
            .arg("--non-interactive")
            .env("PATH", &path)
            .env_remove("HONEYCOMB_API_KEY")
            .env_remove("DYNATRACE_API_TOKEN")
            .env("DYNATRACE_ENVIRONMENT_ID", id)
            .output()
            .expect("script runs")
    };
    let out = run("abc12345");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(tree.path().join("deploy/flagger/dynatrace/environment.env"))
        .expect("env file");
    assert!(
        env.contains("DYNATRACE_URL=https://abc12345.live.dynatrace.com\n"),
        "{env}"
    );
    assert!(env.starts_with('#'), "its comments are kept: {env}");
    let out = run("https://dt.example.com/e/abc/");
    assert!(out.status.success());
    let env = std::fs::read_to_string(tree.path().join("deploy/flagger/dynatrace/environment.env"))
        .expect("env file");
    assert!(
        env.contains("DYNATRACE_URL=https://dt.example.com/e/abc\n"),
        "{env}"
    );
    let out = run("not an id!");
    assert!(!out.status.success(), "a malformed ID is refused");
}
