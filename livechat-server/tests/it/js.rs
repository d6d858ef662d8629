//! The seed frontend's exact calls through the official `socket.io-client` (npm),
//! on both transports. The test installs the npm packages itself (`npm ci`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use livechat_core::Publish;
use livechat_core::model::Direction;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::harness::TestServer;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Installs socket.io-client from the lock file once per test run.
async fn npm_ci() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            if js_dir()
                .join("node_modules/socket.io-client/package.json")
                .exists()
            {
                return;
            }
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(js_dir())
                .status()
                .await
                .expect("npm is needed for the socket.io-client tests (Node.js 20 with npm)");
            assert!(status.success(), "npm ci failed in {}", js_dir().display());
        })
        .await;
}

/// Runs the seed flow; `on_ready` is called once the script's joins were handled.
async fn seed_flow<F, Fut>(
    server: &TestServer,
    token: &str,
    transport: &str,
    expected: usize,
    on_ready: F,
) -> Vec<(String, Value)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    npm_ci().await;
    let demo = server.demo();
    let mut child = Command::new("node")
        .arg("seed-flow.mjs")
        .arg(server.url(""))
        .arg(token)
        .arg(demo.contact_id.to_string())
        .arg(demo.workspace_id.to_string())
        .arg(transport)
        .arg(expected.to_string())
        .current_dir(js_dir())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the socket.io-client tests");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut on_ready = Some(on_ready);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .expect("the seed flow printed nothing for 15 s");
        let Some(line) = line.unwrap() else { break };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON from node: {line}: {e}"));
        let event = v["event"].as_str().unwrap().to_owned();
        if event == "ready" {
            assert_eq!(v["data"]["ok"], true, "history ack: {v}");
            assert_eq!(
                v["data"]["transport"], transport,
                "the transport asked for is the one used"
            );
            if let Some(f) = on_ready.take() {
                f().await;
            }
        }
        seen.push((event, v["data"].clone()));
    }
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("node did not exit")
        .unwrap();
    assert!(status.success(), "seed flow exited with {status}: {seen:?}");
    seen
}

#[tokio::test]
async fn the_seed_frontend_works_unchanged_over_both_transports() {
    let server = TestServer::start().await;
    let token = server.token("demo-agent");
    for transport in ["websocket", "polling"] {
        let chat = server_chat(&server);
        let contact = server.demo().contact_id;
        let seen = seed_flow(&server, &token, transport, 3, || async move {
            for i in 0..3 {
                chat.publish(
                    Publish::new(contact, Direction::Inbound, format!("{transport} {i}"))
                        .sender("+15550123"),
                )
                .await
                .unwrap();
            }
        })
        .await;
        let messages: Vec<&Value> = seen
            .iter()
            .filter(|(e, _)| e == "new_message")
            .map(|(_, v)| v)
            .collect();
        let bodies: Vec<&str> = messages
            .iter()
            .map(|m| m["body"].as_str().unwrap())
            .collect();
        assert_eq!(
            bodies,
            [
                format!("{transport} 0"),
                format!("{transport} 1"),
                format!("{transport} 2")
            ],
            "each once, in order, though the socket is in both rooms"
        );
        for m in messages {
            // The seed's fields, snake_case.
            for field in [
                "id",
                "contact_id",
                "workspace_id",
                "sender",
                "body",
                "is_read",
                "direction",
                "status",
                "twilio_sid",
                "msg_type",
                "created_at",
            ] {
                assert!(m.get(field).is_some(), "missing {field}: {m}");
            }
            assert_eq!(m["direction"], "inbound");
            assert_eq!(m["status"], "received");
            assert_eq!(m["sender"], "+15550123");
        }
        assert!(seen.iter().all(|(e, _)| e != "livechat:error"), "{seen:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_official_client_sees_unauthorized_without_a_valid_token() {
    let server = TestServer::start().await;
    for token in ["-", "not-a-jwt"] {
        let seen = seed_flow(&server, token, "websocket", 1, || async {}).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].0, "connect_error");
        assert_eq!(seen[0].1["message"], "unauthorized");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_readme_reconnect_snippet_recovers_everything_with_the_official_client() {
    npm_ci().await;
    let server = TestServer::start().await;
    let demo = server.demo().clone();
    // The demo workspace starts with a few messages of its own: the flow starts after them.
    let start = {
        let agent = server
            .socket("demo-agent", rust_socketio::TransportType::Websocket)
            .await;
        let page = agent
            .call(
                "sync",
                serde_json::json!({ "workspaceId": demo.workspace_id, "after": 0 }),
            )
            .await;
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .max()
            .unwrap_or(0)
    };
    let mut child = Command::new("node")
        .arg("recovery-flow.mjs")
        .arg(server.url(""))
        .arg(server.token("demo-agent"))
        .arg(demo.workspace_id.to_string())
        .arg((start + 60).to_string())
        .arg(start.to_string())
        .current_dir(js_dir())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the socket.io-client tests");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut publisher = None;
    let mut done = None;
    let mut recoveries = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the recovery flow printed nothing for 20 s")
        .unwrap()
    {
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str().unwrap() {
            "ready" => {
                let chat = server_chat(&server);
                let contact = demo.contact_id;
                publisher = Some(tokio::spawn(async move {
                    for i in 0..60 {
                        chat.publish(Publish::new(contact, Direction::Inbound, format!("r{i}")))
                            .await
                            .unwrap();
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                }));
            }
            "recovery" => recoveries.push(v["data"].clone()),
            "done" => done = Some(v["data"].clone()),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    publisher
        .expect("the client never got ready")
        .await
        .unwrap();
    let done = done.expect("the client did not receive every message");
    let seen: Vec<i64> = done["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    assert_eq!(
        seen,
        (start + 1..=start + 60).collect::<Vec<_>>(),
        "everything once, in order, across the reconnect"
    );
    assert!(
        done["connects"].as_i64().unwrap() >= 2,
        "the transport was dropped and reconnected: {done}"
    );
    assert!(
        recoveries.iter().all(|r| r["complete"] == true),
        "{recoveries:?}"
    );
    assert!(child.wait().await.unwrap().success());
    server.stop().await;
}

fn server_chat(server: &TestServer) -> livechat_core::LiveChat {
    server.started.chat.clone()
}
