//! The server's edge: origin checks before the websocket upgrade, CORS, and logs
//! that never carry a secret.

use std::time::Duration;

use reqwest::Method;
use rust_socketio::TransportType;
use serde_json::json;

use crate::harness::{ADMIN, SECRET, SocketClientBuilder, TestServer, spawn_binary_with_logs};

#[tokio::test]
async fn a_websocket_upgrade_from_a_foreign_origin_is_refused_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = TestServer::start().await;
    let ws_url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    let upgrade = |origin: &str| {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    match upgrade("https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!(
            "a foreign origin was not refused with 403: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    let (_ws, res) = upgrade("http://localhost:3000")
        .await
        .expect("a local origin upgrades");
    assert_eq!(res.status(), 101);

    // The polling transport is held to the same list.
    let status = s
        .http
        .get(s.url("/socket.io/?EIO=4&transport=polling"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    s.stop().await;
}

#[tokio::test]
async fn cors_echoes_only_allowed_origins_and_never_a_wildcard() {
    let s = TestServer::start_on_temp(&["--allowed-origins", "https://inbox.example.com"]).await;
    let preflight = |origin: &'static str| {
        s.http
            .request(Method::OPTIONS, s.url("/api/workspaces"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("https://inbox.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://inbox.example.com"
    );
    assert!(
        ok.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let foreign = preflight("https://evil.example").await.unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // With a list, localhost pages are no longer allowed to open sockets.
    let status = s
        .http
        .get(s.url("/socket.io/?EIO=4&transport=polling"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    s.stop().await;
}

#[tokio::test]
async fn logs_never_carry_tokens_or_secrets_even_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, banner, logs) = spawn_binary_with_logs(
        dir.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--admin-token",
            ADMIN,
        ],
        "debug",
    )
    .await;
    let http = reqwest::Client::new();
    // A good token over a socket and over REST, a forged one, and the admin token.
    let mut agent = SocketClientBuilder::new(&banner.url, &banner.token, TransportType::Websocket)
        .connect()
        .await;
    agent
        .call("join_workspace", json!({ "workspaceId": banner.workspace }))
        .await;
    agent
        .call(
            "send_message",
            json!({ "contactId": banner.contact, "body": "hello" }),
        )
        .await;
    agent.next("new_message").await;
    let forged = format!("{}x", banner.token);
    let _ = http
        .get(format!(
            "{}/api/contacts/{}/messages",
            banner.url, banner.contact
        ))
        .bearer_auth(&forged)
        .send()
        .await;
    let _ = http
        .get(format!(
            "{}/api/contacts/{}/messages",
            banner.url, banner.contact
        ))
        .bearer_auth(&banner.token)
        .send()
        .await;
    let _ = http
        .post(format!("{}/api/workspaces", banner.url))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "x"}))
        .send()
        .await;
    let _ = http
        .post(format!("{}/api/workspaces", banner.url))
        .bearer_auth("wrong-admin-token")
        .json(&json!({"name": "x"}))
        .send()
        .await;
    let refused = SocketClientBuilder::new(&banner.url, &forged, TransportType::Websocket)
        .try_connect()
        .await;
    assert!(refused.is_err(), "a forged token is refused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let text = logs.await.unwrap();
    assert!(
        text.contains("DEBUG") || text.contains("debug"),
        "debug logs were written: {text}"
    );
    let signature = banner.token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("JWT secret", SECRET),
        ("admin token", ADMIN),
        ("agent token", banner.token.as_str()),
        ("token signature", signature),
    ] {
        assert!(!text.contains(secret), "the {what} appears in the logs");
    }
    assert!(
        !text.contains("wrong-admin-token"),
        "a guessed admin token appears in the logs"
    );
}
