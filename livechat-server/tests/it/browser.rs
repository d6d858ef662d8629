//! The demo inbox at `/`, end to end in headless Chromium (Debian's `chromium`, driven
//! by Playwright): two agents in two browser contexts, each on the link the server
//! prints for it. The test installs what it needs itself: Chromium with apt-get
//! (`scripts/install-chromium.sh`) and playwright-core with `npm ci`.
//!
//! The screenshot of the first agent's page goes to
//! `<target>/test-artifacts/demo-inbox.png`; with `LIVECHAT_UPDATE_SCREENSHOT=1` it is
//! also copied to `docs/demo-inbox.png`, the one the README shows.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use livechat_core::Publish;
use livechat_core::model::Direction;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::harness::TestServer;

const CHROMIUM: &str = "/usr/bin/chromium";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("livechat-server lives in the workspace")
        .to_owned()
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `$CARGO_TARGET_DIR/test-artifacts`, else the workspace's `target/test-artifacts`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Installs Debian's Chromium when `/usr/bin/chromium` is missing.
async fn ensure_chromium() {
    if Path::new(CHROMIUM).exists() {
        return;
    }
    let script = workspace_root().join("scripts/install-chromium.sh");
    eprintln!(
        "{CHROMIUM} is missing: installing it with {}",
        script.display()
    );
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(600), Command::new(&script).status())
        .await
        .expect("installing Chromium took over 10 minutes")
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    assert!(
        status.success() && Path::new(CHROMIUM).exists(),
        "the demo inbox test needs Chromium at {CHROMIUM}; {} failed ({status}): run it as \
         root, or `apt-get install -y --no-install-recommends chromium`",
        script.display()
    );
    eprintln!("Chromium installed in {:.0?}", started.elapsed());
}

/// Installs playwright-core from the lock file, when it is not there yet.
async fn npm_ci() {
    let dir = browser_dir();
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let install = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(std::time::Duration::from_secs(300), install)
        .await
        .expect("npm ci did not finish within 5 minutes")
        .expect("npm is needed for the browser test (Node.js 20 with npm)");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[tokio::test]
async fn the_demo_inbox_works_for_two_agents_in_chromium() {
    ensure_chromium().await;
    npm_ci().await;
    let server = TestServer::start().await;
    let demo = server.demo().clone();
    let links = demo.inbox_links(server.addr);
    assert_eq!(links.len(), 2, "a link per demo agent: {links:?}");
    let contacts = {
        let (status, list) = server
            .request(
                reqwest::Method::GET,
                &format!("/api/workspaces/{}/contacts", demo.workspace_id),
                demo.agent_token.as_deref(),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        let (_, unread) = server
            .request(
                reqwest::Method::GET,
                &format!("/api/workspaces/{}/unread", demo.workspace_id),
                demo.agent_token.as_deref(),
                None,
            )
            .await;
        list["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let id = c["id"].as_str().unwrap();
                json!({ "id": id, "name": c["name"], "unread": unread["counts"][id].as_u64().unwrap_or(0) })
            })
            .collect::<Vec<Value>>()
    };
    assert!(
        contacts.iter().any(|c| c["unread"].as_u64() > Some(0)),
        "a demo contact has unread inbound messages: {contacts:?}"
    );
    let artifacts = artifacts_dir();
    let screenshot = artifacts.join("demo-inbox.png");
    for stale in [
        "demo-inbox.png",
        "demo-inbox-agent-2.png",
        "demo-inbox-failure-a.png",
        "demo-inbox-failure-b.png",
    ] {
        let _ = std::fs::remove_file(artifacts.join(stale));
    }
    let inbound = "Hi! Is my order on its way? I need it before Friday.";
    let config = json!({
        "agentA": { "user": links[0].0, "link": links[0].1 },
        "agentB": { "user": links[1].0, "link": links[1].1 },
        "contacts": contacts,
        "demoContact": demo.contact_id,
        "inboundBody": inbound,
        "screenshot": screenshot,
        "artifacts": artifacts,
    });

    let started = Instant::now();
    let mut child = Command::new("node")
        .arg("inbox.mjs")
        .arg(config.to_string())
        .current_dir(browser_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is needed for the browser test");
    let mut guard = StopOnDrop(child.id());
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut steps = Vec::new();
    let mut outcome = None;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(40), lines.next_line())
        .await
        .unwrap_or_else(|_| {
            panic!("the browser script printed nothing for 40 s; steps: {steps:#?}")
        })
        .unwrap()
    {
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON from the browser script: {line}: {e}"));
        match v["event"].as_str().unwrap_or_default() {
            "step" => steps.push(format!("{} ({} ms)", v["what"], v["ms"])),
            "waiting_for_inbound" => {
                server
                    .started
                    .chat
                    .publish(
                        Publish::new(demo.contact_id, Direction::Inbound, inbound)
                            .sender("Maya Chen"),
                    )
                    .await
                    .unwrap();
                stdin.write_all(b"go\n").await.unwrap();
            }
            "done" | "failed" => outcome = Some(v),
            other => panic!("unexpected line from the browser script ({other}): {line}"),
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the browser script did not exit")
        .unwrap();
    guard.0 = None;
    let outcome = outcome
        .unwrap_or_else(|| panic!("the browser script said nothing at the end; steps: {steps:#?}"));
    assert_eq!(
        outcome["event"],
        "done",
        "the demo inbox in Chromium: {}\nsteps passed: {steps:#?}\nscreenshots of the failure in {}",
        outcome["error"],
        artifacts.display()
    );
    assert!(status.success(), "{status}");
    eprintln!(
        "demo inbox in Chromium: {} steps in {:.1?}; screenshot {}",
        steps.len(),
        started.elapsed(),
        screenshot.display()
    );
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot at {}",
        screenshot.display()
    );
    if std::env::var_os("LIVECHAT_UPDATE_SCREENSHOT").is_some() {
        let docs = workspace_root().join("docs/demo-inbox.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::copy(&screenshot, &docs).unwrap();
        eprintln!("copied to {}", docs.display());
    }
    server.stop().await;
}

/// Stops the browser script when the test ends before it: SIGTERM, which Playwright
/// answers by closing Chromium (a SIGKILL would leave Chromium running), then SIGKILL
/// if it is still there after 5 s.
struct StopOnDrop(Option<u32>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let Some(pid) = self.0.take() else { return };
        let pid = pid.to_string();
        let signal = |sig: &str| {
            std::process::Command::new("kill")
                .args([sig, &pid])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !signal("-TERM") {
            return;
        }
        // Gone, or exited and waiting to be reaped (a zombie still answers `kill -0`).
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
        };
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            if !running() {
                return;
            }
        }
        signal("-KILL");
    }
}

/// The page and its files: the right types, a strict CSP on each, no inline script,
/// cheap revalidation, and the official client bundle with its license header.
#[tokio::test]
async fn the_demo_inbox_is_served_with_a_strict_policy() {
    let server = TestServer::start().await;
    let get = |path: &str, etag: Option<&str>| {
        let mut req = server.http.get(server.url(path));
        if let Some(etag) = etag {
            req = req.header("if-none-match", etag);
        }
        async move {
            tokio::time::timeout(crate::harness::WAIT, req.send())
                .await
                .expect("HTTP timeout")
                .expect("HTTP request")
        }
    };
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/inbox.js", "text/javascript; charset=utf-8"),
        ("/assets/inbox.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
        ("/assets/socket.io.min.js", "text/javascript; charset=utf-8"),
    ] {
        let res = get(path, None).await;
        assert_eq!(res.status(), 200, "GET {path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "GET {path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "GET {path}");
        assert_eq!(header("cache-control"), "no-cache", "GET {path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "GET {path}: {directive} in {csp:?}"
            );
        }
        assert!(!csp.contains("unsafe"), "GET {path}: {csp:?}");
        let etag = header("etag");
        assert!(etag.starts_with('"'), "GET {path}: an ETag, got {etag:?}");
        let body = res.text().await.unwrap();
        if path == "/" {
            for script in body.split("<script").skip(1) {
                let tag = &script[..script.find('>').unwrap()];
                assert!(
                    tag.contains(" src=\"/assets/"),
                    "an inline script: <script{tag}>"
                );
            }
            assert!(!body.contains(" style="), "an inline style");
        }
        if path == "/assets/socket.io.min.js" {
            assert!(
                body.starts_with("/*!\n * Socket.IO v4.8.4\n"),
                "the official bundle, its license header kept"
            );
        }
        let again = get(path, Some(&etag)).await;
        assert_eq!(again.status(), 304, "GET {path} with its ETag");
    }
    let res = get("/assets/nope.js", None).await;
    assert_eq!(res.status(), 404);
    let res = get("/assets/..%2Fsrc%2Fhttp.rs", None).await;
    assert_eq!(res.status(), 404, "only the embedded files");
    server.stop().await;
}
