//! The first command a new user runs: `livechat-server` with no settings at all.

use std::time::Duration;

use rust_socketio::TransportType;
use serde_json::json;
use tokio::process::Command;

use crate::harness::{SocketClientBuilder, spawn_binary};

#[tokio::test]
async fn starts_on_embedded_defaults_prints_a_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Only the port differs from the defaults, so parallel runs do not collide.
    let (mut child, banner) = spawn_binary(dir.path(), &["--bind", "127.0.0.1:0"]).await;
    assert!(
        banner.url.starts_with("http://127.0.0.1:"),
        "{}",
        banner.url
    );
    assert!(
        dir.path().join("livechat.db").exists(),
        "SQLite file created in the working directory"
    );

    let mut agent = SocketClientBuilder::new(&banner.url, &banner.token, TransportType::Websocket)
        .connect()
        .await;
    agent
        .call("join_workspace", json!({ "workspaceId": banner.workspace }))
        .await;
    let sent = agent
        .call(
            "send_message",
            json!({ "contactId": banner.contact, "body": "hello from a new user" }),
        )
        .await;
    assert_eq!(agent.next("new_message").await, sent);

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server did not stop within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
