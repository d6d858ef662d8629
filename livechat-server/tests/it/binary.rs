//! The first command a new user runs: `livechat-server` with no settings at all.

use std::process::Stdio;
use std::time::Duration;

use rust_socketio::TransportType;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::SocketClientBuilder;

#[tokio::test]
async fn starts_on_embedded_defaults_prints_a_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livechat-server"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LIVECHAT_")) {
        cmd.env_remove(key);
    }
    // Only the port differs from the defaults, so parallel runs do not collide.
    let mut child = cmd
        .args(["--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token, mut contact, mut workspace) = (None, None, None, None);
    while token.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the server printed no token within 10 s")
            .unwrap()
            .expect("the server exited before printing a token");
        let last = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned();
        if line.starts_with("livechat listening on ") {
            url = Some(last);
        } else if line.starts_with("demo contact:") {
            contact = Some(last);
        } else if line.starts_with("demo workspace:") {
            workspace = Some(last);
        } else if line.starts_with("demo agent token") {
            token = Some(last);
        }
    }
    let url = url.expect("address printed");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        dir.path().join("livechat.db").exists(),
        "SQLite file created in the working directory"
    );

    let mut agent =
        SocketClientBuilder::new(&url, token.as_deref().unwrap(), TransportType::Websocket)
            .connect()
            .await;
    agent
        .call(
            "join_workspace",
            json!({ "workspaceId": workspace.unwrap() }),
        )
        .await;
    let sent = agent
        .call(
            "send_message",
            json!({ "contactId": contact.unwrap(), "body": "hello from a new user" }),
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
