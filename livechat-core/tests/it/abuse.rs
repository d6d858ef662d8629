//! Abuse limits through real clients: each limit refuses over it and nothing under it,
//! and never touches other users.

use std::time::Duration;

use livechat_core::model::{Role, UserId};
use livechat_core::store::MemoryStore;
use livechat_core::{Limits, OriginPolicy, Rate, TrustedProxies};
use rust_socketio::asynchronous::ClientBuilder;
use serde_json::json;

use crate::harness::{Server, TestClient, token};

/// Loopback is a trusted proxy, so `X-Forwarded-For` can stand for distinct clients.
async fn server_behind_proxy(limits: Limits) -> Server {
    Server::start_custom(MemoryStore::new(), limits, |b| {
        b.trusted_proxies(TrustedProxies(vec!["127.0.0.1/32".parse().unwrap()]))
    })
    .await
}

async fn connect_from(server: &Server, user: &str, ip: &str) -> Result<TestClient, String> {
    TestClient::connect(
        ClientBuilder::new(server.url())
            .opening_header("X-Forwarded-For", ip)
            .auth(json!({ "token": token(user) })),
    )
    .await
}

#[tokio::test]
async fn connection_attempts_are_rate_limited_per_address() {
    let mut limits = Limits::default();
    limits.connect_rate_per_ip = Rate::new(1, 3);
    let server = server_behind_proxy(limits).await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(
            connect_from(&server, "alice", "198.51.100.1")
                .await
                .expect("under the limit"),
        );
    }
    let e = connect_from(&server, "alice", "198.51.100.1")
        .await
        .err()
        .expect("the 4th attempt is refused");
    assert!(e.contains("rate_limited"), "{e}");
    connect_from(&server, "alice", "198.51.100.2")
        .await
        .expect("another address is unaffected");
    // The budget refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    connect_from(&server, "alice", "198.51.100.1")
        .await
        .expect("refilled after a second");
}

#[tokio::test]
async fn open_connections_are_limited_per_address_per_user_and_in_all() {
    let mut limits = Limits::default();
    limits.max_connections_per_ip = 2;
    limits.max_connections_per_user = 3;
    limits.max_connections = 5;
    let server = server_behind_proxy(limits).await;

    let a1 = connect_from(&server, "alice", "198.51.100.1")
        .await
        .unwrap();
    let _a2 = connect_from(&server, "alice", "198.51.100.1")
        .await
        .unwrap();
    let e = connect_from(&server, "bob", "198.51.100.1")
        .await
        .err()
        .expect("a 3rd from one address");
    assert!(e.contains("too many connections from this address"), "{e}");
    // Closing one frees its slot.
    a1.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let _a3 = loop {
        match connect_from(&server, "alice", "198.51.100.1").await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "slot never freed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let _a4 = connect_from(&server, "alice", "198.51.100.2")
        .await
        .unwrap();
    let e = connect_from(&server, "alice", "198.51.100.3")
        .await
        .err()
        .expect("a 4th for one user");
    assert!(e.contains("too many connections for this user"), "{e}");

    let _b1 = connect_from(&server, "bob", "198.51.100.4").await.unwrap();
    let _b2 = connect_from(&server, "bob", "198.51.100.5").await.unwrap();
    let e = connect_from(&server, "bob", "198.51.100.6")
        .await
        .err()
        .expect("the 6th in all");
    assert!(e.contains("connection limit"), "{e}");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let mut limits = Limits::default();
    limits.max_connections_per_ip = 2;
    // No trusted proxies: every loopback client is the one address 127.0.0.1.
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let _a = connect_from(&server, "alice", "198.51.100.1")
        .await
        .unwrap();
    let _b = connect_from(&server, "alice", "198.51.100.2")
        .await
        .unwrap();
    let e = connect_from(&server, "alice", "198.51.100.3")
        .await
        .err()
        .expect("spoofed addresses do not help");
    assert!(e.contains("too many connections from this address"), "{e}");
}

#[tokio::test]
async fn sends_are_limited_per_socket_and_per_workspace() {
    let mut limits = Limits::default();
    limits.send_per_socket = Rate::new(1, 2);
    limits.send_per_workspace = Rate::new(1, 4);
    let server = Server::start_with(MemoryStore::new(), limits).await;
    server
        .chat
        .add_member(server.ws, UserId::from("carol"), Role::Agent)
        .await
        .unwrap();
    let c = json!(server.contact);

    let a = server.connect("alice").await;
    a.call_ok("send_message", json!({ "contactId": c, "body": "1" }))
        .await;
    a.call_ok("send_message", json!({ "contactId": c, "body": "2" }))
        .await;
    let e = a
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "3" }),
            "rate_limited",
        )
        .await;
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{e}");
    // The socket stays connected and usable for other requests.
    a.call_ok("history", json!({ "contactId": c })).await;

    // Another socket has its own socket budget; the workspace budget (4) is shared.
    let carol = server.connect("carol").await;
    carol
        .call_ok("send_message", json!({ "contactId": c, "body": "3" }))
        .await;
    carol
        .call_ok("send_message", json!({ "contactId": c, "body": "4" }))
        .await;
    carol
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "5" }),
            "rate_limited",
        )
        .await;

    // Another workspace is unaffected.
    let bob = server.connect("bob").await;
    bob.call_ok(
        "send_message",
        json!({ "contactId": server.other_contact, "body": "fine" }),
    )
    .await;
}

#[tokio::test]
async fn the_user_budget_survives_a_reconnect() {
    let mut limits = Limits::default();
    limits.send_per_user = Rate::new(1, 2);
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let c = json!(server.contact);
    let a = server.connect("alice").await;
    a.call_ok("send_message", json!({ "contactId": c, "body": "1" }))
        .await;
    a.call_ok("send_message", json!({ "contactId": c, "body": "2" }))
        .await;
    a.close().await;
    let again = server.connect("alice").await;
    again
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "3" }),
            "rate_limited",
        )
        .await;
}

#[tokio::test]
async fn foreign_browser_origins_are_refused_and_local_ones_pass() {
    let server = Server::start().await;
    let from = |origin: &'static str| {
        ClientBuilder::new(server.url())
            .opening_header("Origin", origin)
            .auth(json!({ "token": token("alice") }))
    };
    let e = TestClient::connect(from("https://evil.example"))
        .await
        .err()
        .expect("foreign origin refused");
    assert!(e.contains("origin not allowed"), "{e}");
    TestClient::connect(from("http://localhost:5173"))
        .await
        .expect("a local page is allowed");

    let listed = Server::start_custom(MemoryStore::new(), Limits::default(), |b| {
        b.allowed_origins(OriginPolicy::list(["https://inbox.example.com"]))
    })
    .await;
    let from = |origin: &'static str| {
        ClientBuilder::new(listed.url())
            .opening_header("Origin", origin)
            .auth(json!({ "token": token("alice") }))
    };
    TestClient::connect(from("https://inbox.example.com"))
        .await
        .expect("a listed origin passes");
    assert!(
        TestClient::connect(from("http://localhost:5173"))
            .await
            .is_err(),
        "a list replaces the local default"
    );
}
