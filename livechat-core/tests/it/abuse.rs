//! Abuse limits through real clients: each limit refuses over it and nothing under it,
//! and never touches other users.

use std::time::Duration;

use livechat_core::model::{Role, UserId};
use livechat_core::store::MemoryStore;
use livechat_core::{Limits, OriginPolicy, Rate, TrustedProxies};
use rust_socketio::asynchronous::ClientBuilder;
use serde_json::json;

use crate::harness::{Server, TestClient, alone, token};

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
    connect_from(&server, "alice", "198.51.100.1")
        .await
        .err()
        .expect("the 4th attempt is refused");
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
async fn transport_opens_without_a_namespace_connect_count_against_the_address() {
    // Opening Engine.IO sessions and never connecting to the namespace must cost an
    // address its budget too, or one address could hold any number of sessions.
    let mut limits = Limits::default();
    limits.connect_rate_per_ip = Rate::new(1, 3);
    let server = server_behind_proxy(limits).await;
    let http = reqwest::Client::new();
    let open = |ip: &'static str| {
        http.get(format!(
            "{}/socket.io/?EIO=4&transport=polling",
            server.url()
        ))
        .header("X-Forwarded-For", ip)
        .send()
    };
    for n in 0..3 {
        let res = open("198.51.100.9").await.unwrap();
        assert_eq!(res.status(), 200, "open {n} is under the budget");
        let body = res.text().await.unwrap();
        assert!(
            body.starts_with('0') && body.contains("\"sid\""),
            "an open packet: {body}"
        );
    }
    let res = open("198.51.100.9").await.unwrap();
    assert_eq!(
        res.status(),
        429,
        "the 4th open is refused before a session exists"
    );
    assert_eq!(res.headers()["retry-after"], "1");
    let body = res.text().await.unwrap();
    assert!(body.contains("rate_limited"), "{body}");
    // The refused address cannot connect a socket either; another address can.
    connect_from(&server, "alice", "198.51.100.9")
        .await
        .err()
        .expect("the budget is spent");
    connect_from(&server, "alice", "198.51.100.10")
        .await
        .expect("another address is unaffected");
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

/// Connects over a raw websocket and completes the namespace connect.
async fn raw_ws(
    server: &Server,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let auth = json!({ "token": token("alice") });
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no connect answer");
        if let Some(Ok(Message::Text(t))) = m
            && t.starts_with("40")
        {
            return ws;
        }
    }
}

/// A `send_message` packet whose whole frame is `size` bytes.
fn packet_of(server: &Server, size: usize) -> String {
    let head = format!(
        "42[\"send_message\",{{\"contactId\":\"{}\",\"body\":\"",
        server.contact
    );
    let tail = "\"}]";
    format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()))
}

#[tokio::test]
async fn oversized_websocket_frames_close_only_that_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start().await;
    let mut bystander = server.connect("alice").await;
    bystander
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let mut kept = Vec::new();
    for size in [1 << 20, 20 << 20, 100 << 20] {
        let mut ws = raw_ws(&server).await;
        // The server may hang up before the whole frame is written: that is the point.
        let _ = ws.send(Message::text(packet_of(&server, size))).await;
        // What comes back: an error event (the frame fit) or the end of the connection.
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(Message::Text(t))) if t.starts_with("42[\"livechat:error\"") => {
                        return Some(t.to_string());
                    }
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("a {size}-byte frame got no answer and was not closed"));
        if size <= 1 << 20 {
            // At the frame limit: read, then refused by the body limit; the connection stays.
            let event = outcome.expect("a frame at the limit keeps its connection");
            assert!(event.contains("payload_too_large"), "{event}");
            kept.push(ws);
        } else {
            assert_eq!(
                outcome, None,
                "a {size}-byte frame must close its connection"
            );
        }
        // Everyone else is served as before.
        bystander
            .call_ok(
                "history",
                json!({ "contactId": server.contact, "limit": 1 }),
            )
            .await;
    }
    bystander
        .none("new_message", Duration::from_millis(200))
        .await;
    // The socket that sent a frame at the limit is still there; the others are gone.
    assert_eq!(server.chat.connected_sockets(), 2);
}

#[tokio::test]
async fn oversized_polling_bodies_are_refused_and_close_only_that_session() {
    let server = Server::start().await;
    let bystander = server.connect("alice").await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", server.addr);
    for size in [1 << 20, 20 << 20, 100 << 20] {
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let sid = open
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        let url = format!("{base}&sid={sid}");
        let auth = json!({ "token": token("alice") });
        let r = http
            .post(&url)
            .body(format!("40{auth}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            http.post(&url).body(packet_of(&server, size)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("a {size}-byte body hung"));
        if size <= 1 << 20 {
            // At the limit: taken, then refused by the body limit on the next poll.
            assert_eq!(r.unwrap().status(), 200);
            let polled = http.get(&url).send().await.unwrap().text().await.unwrap();
            assert!(polled.contains("payload_too_large"), "{polled}");
        } else if let Ok(r) = r {
            // Over it: a 413, or the connection cut while the body was still being sent.
            assert_eq!(r.status(), 413, "{size}-byte body");
        }
        bystander
            .call_ok(
                "history",
                json!({ "contactId": server.contact, "limit": 1 }),
            )
            .await;
    }
    // The bystander and the session that stayed within the limit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.chat.connected_sockets() > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an over-limit polling session is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Median and worst send→ack latency of `n` sends from `client`.
async fn latencies(
    client: &TestClient,
    contact: serde_json::Value,
    n: usize,
) -> (Duration, Duration) {
    let mut all = Vec::new();
    for i in 0..n {
        let started = tokio::time::Instant::now();
        client
            .call_ok(
                "send_message",
                json!({ "contactId": contact, "body": format!("calm {i}") }),
            )
            .await;
        all.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all.sort();
    (all[n / 2], all[n - 1])
}

#[tokio::test]
async fn a_flooding_abuser_does_not_slow_a_well_behaved_client() {
    let _alone = alone().await;
    let server = server_behind_proxy(Limits::default()).await;
    let calm = connect_from(&server, "bob", "203.0.113.10").await.unwrap();
    let contact = json!(server.other_contact);
    let (base_median, base_worst) = latencies(&calm, contact.clone(), 10).await;

    // The abuser: 100 connection attempts from one address, then every admitted socket
    // fires 100 sends without waiting. Bounded in count, over in a few seconds.
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..100 {
        match connect_from(&server, "alice", "198.51.100.66").await {
            Ok(c) => admitted.push(c),
            Err(_) => refused += 1,
        }
    }
    assert!(refused >= 70, "only {refused} of 100 attempts refused");
    let abuser_contact = json!(server.contact);
    let flood = admitted.iter().map(|c| {
        let payload = abuser_contact.clone();
        async move {
            for i in 0..100 {
                let _ = c
                    .client
                    .emit(
                        "send_message",
                        json!({ "contactId": payload, "body": format!("spam {i}") }),
                    )
                    .await;
            }
        }
    });
    let flooding = futures_util::future::join_all(flood);
    let measuring = latencies(&calm, contact, 20);
    let (_, (median, worst)) = tokio::join!(flooding, measuring);

    let stored = server
        .chat
        .history(
            &livechat_core::auth::JwtAuthenticator::hs256(crate::harness::SECRET)
                .verify(&token("alice"))
                .unwrap(),
            livechat_core::protocol::HistoryRequest {
                contact_id: server.contact,
                before: None,
                limit: Some(200),
            },
        )
        .await
        .unwrap();
    eprintln!(
        "flood: {} of 100 connections admitted, {} of {} spam sends stored; calm client median {:?} \
         (before: {:?}), worst {:?} (before: {:?})",
        admitted.len(),
        stored.messages.len(),
        admitted.len() * 100,
        median,
        base_median,
        worst,
        base_worst
    );
    assert!(
        stored.messages.len() <= 40,
        "the user budget (burst 30) held: {}",
        stored.messages.len()
    );
    assert!(
        median < base_median * 5 + Duration::from_millis(20),
        "the calm client's median went from {base_median:?} to {median:?}"
    );
    assert!(
        worst < Duration::from_millis(500),
        "the calm client's worst send took {worst:?}"
    );
}

#[tokio::test]
async fn a_half_open_connection_is_closed_by_the_handshake_timeout() {
    use futures_util::StreamExt;
    let mut limits = Limits::default();
    limits.connect_timeout = Duration::from_millis(500);
    let server = Server::start_with(MemoryStore::new(), limits).await;
    // The transport opens, but the namespace connect (with the token) never comes.
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection without a namespace connect was kept past the timeout"
    );
}

#[tokio::test]
async fn a_socket_with_too_many_requests_pending_is_told_at_once() {
    let mut limits = Limits::default();
    limits.max_pending_per_socket = 1;
    // Every commit takes 300 ms, so requests pile up behind the first one.
    let server = Server::start_with(
        crate::harness::SlowStore::new(Duration::from_millis(300)),
        limits,
    )
    .await;
    // Raw frames with distinct ack ids: rust_socketio draws ack ids at random from
    // 0..999, so overlapping calls on one client can collide and lose an ack.
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = raw_ws(&server).await;
    for id in 1..=4 {
        let body =
            json!(["send_message", { "contactId": server.contact, "body": format!("p{id}") }]);
        ws.send(Message::text(format!("42{id}{body}")))
            .await
            .unwrap();
    }
    let replies: std::collections::BTreeMap<u32, serde_json::Value> =
        acks_in_arrival_order(&mut ws, 4)
            .await
            .into_iter()
            .collect();
    let replies: Vec<serde_json::Value> = replies.into_values().collect();
    let ok = replies.iter().filter(|r| r["ok"] == true).count();
    let busy: Vec<_> = replies
        .iter()
        .filter(|r| r["error"]["code"] == "rate_limited")
        .collect();
    // One in progress and one queued at most; the rest are refused, with a retry hint.
    assert!((1..=2).contains(&ok), "{replies:?}");
    assert_eq!(ok + busy.len(), 4, "{replies:?}");
    assert!(
        busy.iter()
            .all(|r| r["error"]["retry_after_ms"].as_u64().is_some()),
        "{busy:?}"
    );
}

/// Reads frames until `n` acks (`43<id>[...]`) arrived; returns them in arrival order.
async fn acks_in_arrival_order(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    n: usize,
) -> Vec<(u32, serde_json::Value)> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut acks = Vec::new();
    while acks.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} acks within 5 s: {acks:?}", acks.len()))
            .expect("the connection closed")
            .expect("websocket error");
        let Message::Text(text) = frame else { continue };
        let Some(ack) = text.strip_prefix("43") else {
            continue;
        };
        let split = ack.find('[').expect("an ack frame carries an array");
        let mut args: Vec<serde_json::Value> = serde_json::from_str(&ack[split..]).unwrap();
        acks.push((ack[..split].parse().expect("ack id"), args.remove(0)));
    }
    acks
}

#[tokio::test]
async fn a_burst_from_one_socket_shares_commits_and_is_acked_in_order() {
    // Every commit takes 200 ms: sends handled one at a time would need eight commits.
    let server = Server::start_with(
        crate::harness::SlowStore::new(Duration::from_millis(200)),
        Limits::default(),
    )
    .await;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = raw_ws(&server).await;
    let batches_before = server.chat.stats().commit_batches;
    for id in 1..=8u32 {
        let body = json!(["send_message", {
            "contactId": server.contact, "body": format!("m{id}"), "clientId": format!("k{id}")
        }]);
        ws.send(Message::text(format!("42{id}{body}")))
            .await
            .unwrap();
    }
    // A read after the sends: it must see all of them.
    let history = json!(["history", { "contactId": server.contact }]);
    ws.send(Message::text(format!("429{history}")))
        .await
        .unwrap();

    let acks = acks_in_arrival_order(&mut ws, 9).await;
    let ids: Vec<u32> = acks.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=9).collect::<Vec<u32>>(),
        "acks in the order of the requests"
    );
    let seqs: Vec<i64> = acks[..8]
        .iter()
        .map(|(_, r)| r["data"]["seq"].as_i64().unwrap_or_else(|| panic!("{r}")))
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<i64>>(), "seqs in send order");
    let read: Vec<&str> = acks[8].1["data"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", acks[8].1))
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        read.len(),
        8,
        "the read after the sends sees every one: {read:?}"
    );
    let batches = server.chat.stats().commit_batches - batches_before;
    assert!(
        batches <= 3,
        "eight sends from one socket took {batches} commits: they did not share"
    );
}

#[tokio::test]
async fn namespace_connects_over_one_transport_are_rate_limited_too() {
    // One transport open, then connect after connect over it: each is a token check,
    // and each counts against the address's handshake budget.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut limits = Limits::default();
    limits.connect_rate_per_ip = Rate::new(1, 3);
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let auth = json!({ "token": token("alice") });
    let mut answers = Vec::new();
    for _ in 0..4 {
        ws.send(Message::text(format!("40{auth}"))).await.unwrap();
        let answer = loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("an answer to the connect within 5 s")
                .expect("the connection stays open");
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => panic!("the connection broke after {answers:?}: {e}"),
            };
            if let Message::Text(text) = frame
                && (text.starts_with("40") || text.starts_with("44"))
            {
                break text.to_string();
            }
        };
        if answer.starts_with("40") {
            ws.send(Message::text("41")).await.unwrap();
        }
        answers.push(answer);
    }
    let accepted = answers.iter().filter(|a| a.starts_with("40")).count();
    assert_eq!(accepted, 3, "the burst, then refusals: {answers:?}");
    assert!(
        answers[3].starts_with("44") && answers[3].contains("rate_limited"),
        "{answers:?}"
    );
}
