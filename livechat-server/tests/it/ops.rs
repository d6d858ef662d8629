//! What operators rely on, against the real binary (a process of its own, so that
//! its metrics count only what the test did): `/metrics` after a scripted session,
//! the log lines it leaves, and the drain at SIGTERM.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use livechat_core::model::WorkspaceId;
use livechat_core::store::{MessageStore, SqliteStore, SyncScope};
use rust_socketio::TransportType;
use serde_json::{Value, json};

use crate::harness::{SocketClientBuilder, spawn_binary, spawn_binary_with_logs, terminate};

/// One scrape of `/metrics`: every sample by its name and sorted labels, e.g.
/// `livechat_requests_total{event="send_message",outcome="ok"}`.
struct Scrape {
    samples: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    async fn of(base: &str) -> Self {
        let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(res.status(), 200, "GET /metrics");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = res.text().await.unwrap();
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("`series value`");
                (canonical(series), value.parse().expect("a number"))
            })
            .collect();
        Self { samples, text }
    }

    fn get(&self, series: &str) -> f64 {
        self.samples.get(&canonical(series)).copied().unwrap_or(0.0)
    }

    /// How much `series` grew since `before`.
    fn delta(&self, before: &Self, series: &str) -> f64 {
        self.get(series) - before.get(series)
    }
}

/// `name{b="2",a="1"}` → `name{a="1",b="2"}`: the exporter's label order is its own.
fn canonical(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_owned();
    };
    let labels: BTreeMap<&str, &str> = labels
        .trim_end_matches('}')
        .split("\",")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("label=value");
            (k, v.trim_matches('"'))
        })
        .collect();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

#[tokio::test]
async fn metrics_and_logs_follow_a_scripted_session() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, banner, logs) =
        spawn_binary_with_logs(dir.path(), &["--bind", "127.0.0.1:0"], "info").await;
    let base = banner.url.clone();
    let before = Scrape::of(&base).await;

    // Connect, join, send, have a send refused, fail to connect, disconnect.
    let mut agent = SocketClientBuilder::new(&base, &banner.token, TransportType::Websocket)
        .connect()
        .await;
    agent
        .call("join_contact", json!({ "contactId": banner.contact }))
        .await;
    let body = "a body that must never reach the logs";
    let sent = agent
        .call(
            "send_message",
            json!({ "contactId": banner.contact, "body": body }),
        )
        .await;
    assert_eq!(agent.next("new_message").await, sent);
    let refused = agent
        .call_raw(
            "send_message",
            json!({ "contactId": banner.contact, "body": "   " }),
        )
        .await;
    assert_eq!(refused["error"]["code"], "invalid_payload", "{refused}");
    let forged = SocketClientBuilder::new(&base, "forged.token.value", TransportType::Websocket)
        .try_connect()
        .await;
    assert!(forged.is_err(), "a forged token was let in");
    // A page of another site, refused at the server's edge, and a REST call without
    // a token.
    let http = reqwest::Client::new();
    let cross_site = http
        .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let anonymous = http
        .get(format!("{base}/api/workspaces/{}/unread", banner.workspace))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let during = Scrape::of(&base).await;
    assert_eq!(
        during.get("livechat_connections{transport=\"websocket\"}"),
        1.0,
        "one open websocket connection:\n{}",
        during.text
    );
    let expected_growth = [
        ("livechat_connections_opened_total", 1.0),
        (
            "livechat_connections_refused_total{reason=\"unauthorized\"}",
            1.0,
        ),
        ("livechat_connections_refused_total{reason=\"origin\"}", 1.0),
        ("livechat_http_errors_total{code=\"unauthorized\"}", 1.0),
        (
            "livechat_requests_total{event=\"join_contact\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "livechat_requests_total{event=\"send_message\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "livechat_requests_total{event=\"send_message\",outcome=\"invalid_payload\"}",
            1.0,
        ),
        (
            "livechat_messages_in_total{direction=\"outbound\",outcome=\"stored\"}",
            1.0,
        ),
        (
            "livechat_messages_in_total{direction=\"outbound\",outcome=\"invalid_payload\"}",
            1.0,
        ),
        ("livechat_messages_out_total{origin=\"local\"}", 1.0),
        ("livechat_deliveries_total{outcome=\"sent\"}", 1.0),
        (
            "livechat_plugin_calls_total{outcome=\"allow\",plugin=\"sanitize\"}",
            1.0,
        ),
        (
            "livechat_plugin_calls_total{outcome=\"allow\",plugin=\"moderation\"}",
            1.0,
        ),
        ("livechat_commit_seconds_count", 1.0),
        ("livechat_broadcast_latency_seconds_count", 1.0),
    ];
    for (series, growth) in expected_growth {
        assert_eq!(
            during.delta(&before, series),
            growth,
            "{series} grew by {} instead of {growth}:\n{}",
            during.delta(&before, series),
            during.text
        );
    }
    for histogram in [
        "livechat_commit_seconds",
        "livechat_broadcast_latency_seconds",
    ] {
        assert!(
            during
                .text
                .contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} is a histogram:\n{}",
            during.text
        );
        assert_eq!(
            during.delta(&before, &format!("{histogram}_bucket{{le=\"+Inf\"}}")),
            1.0,
            "{histogram} has buckets:\n{}",
            during.text
        );
    }

    agent.disconnect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let after = loop {
        let scrape = Scrape::of(&base).await;
        if scrape.delta(&before, "livechat_disconnections_total{reason=\"client\"}") >= 1.0 {
            break scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no client disconnection counted within 5 s:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        after.get("livechat_connections{transport=\"websocket\"}"),
        0.0
    );

    terminate(&mut child, Duration::from_secs(15)).await;
    let logs = tokio::time::timeout(Duration::from_secs(5), logs)
        .await
        .expect("stderr closes when the server exits")
        .unwrap();
    let closed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("connection closed"))
        .collect();
    assert_eq!(closed.len(), 1, "one line for the one connection:\n{logs}");
    for needle in ["demo-agent", "reason=\"client\"", "client=Some(127.0.0.1)"] {
        assert!(
            closed[0].contains(needle),
            "`{needle}` in the connection's line: {}",
            closed[0]
        );
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("connection refused") && l.contains("127.0.0.1")),
        "the refused connection is logged with its address:\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("request refused") && l.contains("invalid_payload")),
        "the refused send is logged with its code:\n{logs}"
    );
    for secret in [banner.token.as_str(), body, "forged.token.value"] {
        assert!(!logs.contains(secret), "`{secret}` leaked into the logs");
    }
}

/// A client that sends one message after the other until the server stops taking
/// them; it keeps what was acked and whether it was told of the drain.
struct Sender {
    acked: Vec<(String, String)>,
    refused_while_draining: usize,
    told: bool,
}

async fn send_until_closed(
    base: String,
    token: String,
    contact: String,
    n: usize,
    sending: tokio::sync::mpsc::Sender<usize>,
) -> Sender {
    let transport = if n.is_multiple_of(2) {
        TransportType::Websocket
    } else {
        TransportType::Polling
    };
    let mut client = SocketClientBuilder::new(&base, &token, transport)
        .connect()
        .await;
    let mut sender = Sender {
        acked: Vec::new(),
        refused_while_draining: 0,
        told: false,
    };
    for i in 0.. {
        let client_id = format!("drain-{n}-{i}");
        let payload =
            json!({ "contactId": contact, "body": format!("burst {i}"), "clientId": client_id });
        match client
            .try_call("send_message", payload, Duration::from_secs(5))
            .await
        {
            Some(reply) if reply["ok"] == true => {
                let id = reply["data"]["id"].as_str().unwrap().to_owned();
                sender.acked.push((client_id, id));
                if i == 0 {
                    let _ = sending.send(n).await;
                }
            }
            Some(reply) => {
                assert_eq!(
                    reply["error"]["code"], "unavailable",
                    "a send refused for another reason: {reply}"
                );
                sender.refused_while_draining += 1;
                break;
            }
            // The connection closed before the answer: not acked, so the client
            // would send it again after reconnecting.
            None => break,
        }
    }
    let notices = client
        .take("livechat:draining", 1, Duration::from_secs(3))
        .await;
    sender.told = match notices.as_slice() {
        [notice] => {
            assert_eq!(notice["reconnect"], true, "{notice}");
            true
        }
        [] => false,
        more => panic!("told {} times: {more:?}", more.len()),
    };
    sender
}

#[tokio::test]
async fn sigterm_during_a_send_burst_loses_no_acked_message_and_tells_every_client() {
    const SENDERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let budget = ["1000", "1000"];
    let (mut child, banner) = spawn_binary(
        dir.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--rate-limit-per-sec",
            budget[0],
            "--rate-limit-burst",
            budget[1],
            "--socket-rate-limit-per-sec",
            budget[0],
            "--socket-rate-limit-burst",
            budget[1],
            "--workspace-rate-limit-per-sec",
            budget[0],
            "--workspace-rate-limit-burst",
            budget[1],
            "--shutdown-timeout-secs",
            "10",
        ],
    )
    .await;
    let (sending, mut started) = tokio::sync::mpsc::channel(SENDERS);
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| {
            tokio::spawn(send_until_closed(
                banner.url.clone(),
                banner.token.clone(),
                banner.contact.clone(),
                n,
                sending.clone(),
            ))
        })
        .collect();
    // Once every client has a send acked, let the burst run a little, then stop the
    // server in the middle of it.
    for _ in 0..SENDERS {
        tokio::time::timeout(Duration::from_secs(20), started.recv())
            .await
            .expect("every sender gets its first ack within 20 s")
            .expect("a sender failed before its first ack");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::time::Instant::now();
    terminate(&mut child, Duration::from_secs(15)).await;
    let stopped_in = stopping.elapsed();

    let mut acked = HashMap::new();
    let mut refused = 0;
    for (n, sender) in senders.into_iter().enumerate() {
        let sender = tokio::time::timeout(Duration::from_secs(20), sender)
            .await
            .unwrap_or_else(|_| panic!("sender {n} never finished"))
            .unwrap();
        assert!(sender.told, "sender {n} was not told of the drain");
        assert!(!sender.acked.is_empty(), "sender {n} got no ack at all");
        refused += sender.refused_while_draining;
        acked.extend(sender.acked);
    }

    let store = SqliteStore::open(&format!(
        "sqlite://{}",
        dir.path().join("livechat.db").display()
    ))
    .await
    .unwrap();
    let workspace = WorkspaceId(banner.workspace.parse().unwrap());
    let mut stored: HashMap<String, Vec<String>> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store
            .sync(SyncScope::Workspace(workspace), after, 500)
            .await
            .unwrap();
        for m in &page.messages {
            after = m.seq;
            if let Some(key) = m.client_id.as_ref().filter(|k| k.starts_with("drain-")) {
                stored
                    .entry(key.clone())
                    .or_default()
                    .push(m.id.to_string());
            }
        }
        if !page.has_more {
            break;
        }
    }
    for (client_id, id) in &acked {
        assert_eq!(
            stored.get(client_id),
            Some(&vec![id.clone()]),
            "acked {client_id} ({id}) is not stored exactly once"
        );
    }
    let stored_ids: HashSet<&String> = stored.values().flatten().collect();
    println!(
        "drain: {} acked (all stored), {} of the burst stored in all, {refused} refused while \
         draining, {SENDERS} clients told, stopped {stopped_in:?} after SIGTERM",
        acked.len(),
        stored_ids.len()
    );
}

#[tokio::test]
async fn readiness_names_the_plugins_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, banner) = spawn_binary(dir.path(), &["--bind", "127.0.0.1:0"]).await;
    let res = reqwest::get(format!("{}/readyz", banner.url))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["plugins"], json!(["sanitize", "moderation"]), "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    terminate(&mut child, Duration::from_secs(15)).await;
}
