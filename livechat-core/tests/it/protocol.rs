//! The wire contract through a real Socket.IO client over real sockets.

use std::time::Duration;

use livechat_core::Limits;
use livechat_core::model::UserId;
use livechat_core::store::MemoryStore;
use rust_socketio::TransportType;
use rust_socketio::asynchronous::ClientBuilder;
use serde_json::{Value, json};

use crate::harness::{SECRET, Server, TestClient, WAIT, alone, token};

const QUIET: Duration = Duration::from_millis(400);

async fn delivery_on(transport: TransportType) {
    let server = Server::start().await;
    let mut agent = server.connect_with("alice", transport.clone()).await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let sender = server.connect_with("alice", transport).await;
    let ack = sender
        .call_ok(
            "send_message",
            json!({ "contactId": server.contact, "body": "hello", "clientId": "c-1" }),
        )
        .await;
    let got = agent.next("new_message").await;
    assert_eq!(got, ack, "the broadcast carries the stored message");
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
        "seq",
        "client_id",
    ] {
        assert!(got.get(field).is_some(), "message lacks `{field}`: {got}");
    }
    assert_eq!(got["body"], "hello");
    assert_eq!(got["sender"], "alice");
    assert_eq!(got["direction"], "outbound");
    assert_eq!(got["status"], "sent");
    assert_eq!(got["msg_type"], "text");
    assert_eq!(got["client_id"], "c-1");
    assert_eq!(got["seq"], 1);
    assert_eq!(got["workspace_id"], json!(server.ws));
}

#[tokio::test]
async fn delivers_over_websocket() {
    delivery_on(TransportType::Websocket).await;
}

#[tokio::test]
async fn delivers_over_long_polling() {
    delivery_on(TransportType::Polling).await;
}

#[tokio::test]
async fn a_socket_in_both_rooms_gets_each_message_once() {
    let server = Server::start().await;
    let mut agent = server.connect("alice").await;
    // As the seed frontend does: joins without acks.
    agent
        .emit("join_contact", json!({ "contactId": server.contact }))
        .await;
    agent
        .emit("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    // An acked request after them proves the joins were handled (events are in order).
    agent
        .call_ok("history", json!({ "contactId": server.contact }))
        .await;

    let sender = server.connect("alice").await;
    for i in 0..5 {
        sender
            .call_ok(
                "send_message",
                json!({ "contactId": server.contact, "body": format!("m{i}") }),
            )
            .await;
    }
    let got = agent.collect("new_message", Duration::from_secs(1)).await;
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        ["m0", "m1", "m2", "m3", "m4"],
        "each message exactly once, in order"
    );
}

#[tokio::test]
async fn the_sender_also_receives_its_own_message_once_when_in_the_room() {
    let server = Server::start().await;
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_contact", json!({ "contactId": server.contact }))
        .await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    agent
        .call_ok(
            "send_message",
            json!({ "contactId": server.contact, "body": "mine" }),
        )
        .await;
    assert_eq!(agent.collect("new_message", QUIET).await.len(), 1);
}

/// With no socket in its rooms, nothing here serializes the message for delivery,
/// so the ack serializes it itself; it must still be the stored message, whole.
#[tokio::test]
async fn the_ack_carries_the_stored_message_when_no_socket_listens() {
    let server = Server::start().await;
    let sender = server.connect("alice").await;
    let ack = sender
        .call_ok(
            "send_message",
            json!({ "contactId": server.contact, "body": "unheard", "clientId": "c-9" }),
        )
        .await;
    assert_eq!(ack["body"], "unheard", "{ack}");
    assert_eq!(ack["seq"], 1, "{ack}");
    let page = sender
        .call_ok("history", json!({ "contactId": server.contact }))
        .await;
    assert_eq!(
        page["messages"][0], ack,
        "the ack is the stored message: {page}"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_client_id_is_stored_and_broadcast_once() {
    let server = Server::start().await;
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let payload = json!({ "contactId": server.contact, "body": "once", "clientId": "retry-1" });
    let first = agent.call_ok("send_message", payload.clone()).await;
    let second = agent.call_ok("send_message", payload).await;
    assert_eq!(first, second, "the retry returns the original message");
    assert_eq!(
        agent.collect("new_message", QUIET).await.len(),
        1,
        "one broadcast"
    );
}

#[tokio::test]
async fn members_of_another_workspace_can_neither_join_nor_read_nor_receive() {
    let server = Server::start().await;
    let mut alice = server.connect("alice").await;
    alice
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let mut bob = server.connect("bob").await;

    bob.call_err(
        "join_contact",
        json!({ "contactId": server.contact }),
        "forbidden",
    )
    .await;
    bob.call_err(
        "join_workspace",
        json!({ "workspaceId": server.ws }),
        "forbidden",
    )
    .await;
    bob.call_err(
        "history",
        json!({ "contactId": server.contact }),
        "forbidden",
    )
    .await;
    bob.call_err(
        "sync",
        json!({ "workspaceId": server.ws, "after": 0 }),
        "forbidden",
    )
    .await;
    bob.call_err(
        "sync",
        json!({ "contactId": server.contact, "after": 0 }),
        "forbidden",
    )
    .await;
    bob.call_err(
        "send_message",
        json!({ "contactId": server.contact, "body": "x" }),
        "forbidden",
    )
    .await;

    // Without an ack, as the seed emits joins, the refusal comes as `livechat:error`.
    bob.emit("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let err = bob.next("livechat:error").await;
    assert_eq!(
        err,
        json!({ "event": "join_workspace", "code": "forbidden", "message": "not a member of this workspace" })
    );

    bob.call_ok("join_workspace", json!({ "workspaceId": server.other_ws }))
        .await;
    alice
        .call_ok(
            "send_message",
            json!({ "contactId": server.contact, "body": "for A only" }),
        )
        .await;
    bob.none("new_message", QUIET).await;
    bob.call_ok(
        "send_message",
        json!({ "contactId": server.other_contact, "body": "for B only" }),
    )
    .await;
    assert_eq!(bob.next("new_message").await["body"], "for B only");
    alice
        .collect("new_message", QUIET)
        .await
        .iter()
        .for_each(|m| {
            assert_eq!(
                m["workspace_id"],
                json!(server.ws),
                "alice got B's message: {m}"
            );
        });
}

#[tokio::test]
async fn a_removed_member_leaves_the_rooms_at_once() {
    let server = Server::start().await;
    let mut alice = server.connect("alice").await;
    alice
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    alice
        .call_ok("join_contact", json!({ "contactId": server.contact }))
        .await;
    server
        .chat
        .remove_member(server.ws, &UserId::from("alice"))
        .await
        .unwrap();
    server
        .chat
        .publish(livechat_core::Publish::new(
            server.contact,
            livechat_core::model::Direction::Inbound,
            "after removal",
        ))
        .await
        .unwrap();
    alice.none("new_message", QUIET).await;
    alice
        .call_err(
            "history",
            json!({ "contactId": server.contact }),
            "forbidden",
        )
        .await;
}

#[tokio::test]
async fn handshake_refuses_missing_bad_and_expired_tokens() {
    let server = Server::start().await;
    let refused = |builder: ClientBuilder| async move {
        match TestClient::connect(builder).await {
            Ok(_) => panic!("connection should be refused"),
            Err(e) => e,
        }
    };
    let e = refused(ClientBuilder::new(server.url())).await;
    assert!(e.contains("unauthorized"), "{e}");

    let forged = livechat_core::auth::Claims::new("alice", chrono::Duration::hours(1))
        .sign_hs256(b"not-the-server-secret-not-the-secret")
        .unwrap();
    let e = refused(ClientBuilder::new(server.url()).auth(json!({ "token": forged }))).await;
    assert!(e.contains("unauthorized"), "{e}");

    let expired = livechat_core::auth::Claims::new("alice", chrono::Duration::minutes(-1))
        .sign_hs256(SECRET)
        .unwrap();
    let e = refused(ClientBuilder::new(server.url()).auth(json!({ "token": expired }))).await;
    assert!(e.contains("unauthorized"), "{e}");

    let e = refused(ClientBuilder::new(server.url()).auth(json!({ "token": "garbage" }))).await;
    assert!(e.contains("unauthorized"), "{e}");
}

#[tokio::test]
async fn handshake_accepts_header_and_query_tokens() {
    let server = Server::start().await;
    let by_header = TestClient::connect(
        ClientBuilder::new(server.url())
            .opening_header("Authorization", format!("Bearer {}", token("alice"))),
    )
    .await
    .expect("a bearer header is accepted");
    by_header
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;

    let by_query = TestClient::connect(ClientBuilder::new(format!(
        "{}/?token={}",
        server.url(),
        token("alice")
    )))
    .await
    .expect("a token query parameter is accepted");
    by_query
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
}

#[tokio::test]
async fn history_pages_newest_first_without_gaps() {
    let server = Server::start().await;
    let agent = server.connect("alice").await;
    let mut sent = Vec::new();
    for i in 0..25 {
        let m = agent
            .call_ok(
                "send_message",
                json!({ "contactId": server.contact, "body": format!("h{i}") }),
            )
            .await;
        sent.push(m);
    }
    let mut seen: Vec<Value> = Vec::new();
    let mut before: Option<i64> = None;
    let mut has_more_flags = Vec::new();
    loop {
        let page = agent
            .call_ok(
                "history",
                json!({ "contactId": server.contact, "before": before, "limit": 10 }),
            )
            .await;
        let messages = page["messages"].as_array().unwrap().clone();
        has_more_flags.push(page["has_more"].as_bool().unwrap());
        before = messages.last().and_then(|m| m["seq"].as_i64());
        seen.extend(messages);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        assert!(has_more_flags.len() < 5, "history does not end");
    }
    assert_eq!(has_more_flags, [true, true, false]);
    seen.reverse();
    assert_eq!(seen, sent, "no gap, no overlap");
}

#[tokio::test]
async fn sync_after_reconnect_returns_exactly_what_was_missed() {
    let server = Server::start().await;
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let sender = server.connect("alice").await;
    sender
        .call_ok(
            "send_message",
            json!({ "contactId": server.contact, "body": "seen" }),
        )
        .await;
    let last_seq = agent.next("new_message").await["seq"].as_i64().unwrap();
    agent.close().await;

    let mut missed = Vec::new();
    for i in 0..7 {
        missed.push(
            sender
                .call_ok(
                    "send_message",
                    json!({ "contactId": server.contact, "body": format!("missed {i}") }),
                )
                .await,
        );
    }
    let agent = server.connect("alice").await;
    let page = agent
        .call_ok(
            "sync",
            json!({ "workspaceId": server.ws, "after": last_seq }),
        )
        .await;
    assert_eq!(page["messages"], Value::Array(missed.clone()));
    assert_eq!(page["has_more"], false);
    let page = agent
        .call_ok(
            "sync",
            json!({ "contactId": server.contact, "after": last_seq, "limit": 3 }),
        )
        .await;
    assert_eq!(page["messages"], Value::Array(missed[..3].to_vec()));
    assert_eq!(page["has_more"], true);
}

#[tokio::test]
async fn bad_input_gets_its_error_code_and_the_server_keeps_serving() {
    let server = Server::start().await;
    let mut bystander = server.connect("alice").await;
    bystander
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let agent = server.connect("alice").await;
    let c = json!(server.contact);

    agent
        .call_err("send_message", json!("just a string"), "invalid_payload")
        .await;
    agent
        .call_err("send_message", json!([1, 2]), "invalid_payload")
        .await;
    agent
        .call_err(
            "send_message",
            json!({ "body": "no contact" }),
            "invalid_payload",
        )
        .await;
    agent
        .call_err(
            "send_message",
            json!({ "contactId": "not-a-uuid", "body": "x" }),
            "invalid_payload",
        )
        .await;
    agent
        .call_err(
            "send_message",
            json!({ "contactId": 42, "body": "x" }),
            "invalid_payload",
        )
        .await;
    agent
        .call_err("join_contact", json!({}), "invalid_payload")
        .await;
    agent
        .call_err(
            "join_workspace",
            json!({ "workspaceId": null }),
            "invalid_payload",
        )
        .await;
    agent
        .call_err(
            "send_message",
            json!({ "contactId": uuid::Uuid::new_v4(), "body": "x" }),
            "not_found",
        )
        .await;
    agent
        .call_err(
            "join_contact",
            json!({ "contactId": uuid::Uuid::new_v4() }),
            "not_found",
        )
        .await;
    agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "" }),
            "invalid_payload",
        )
        .await;
    agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "   " }),
            "invalid_payload",
        )
        .await;
    let big = "x".repeat(16 * 1024 + 1);
    let e = agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": big }),
            "payload_too_large",
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("16384"), "{e}");
    agent
        .call_err("sync", json!({ "after": 0 }), "invalid_payload")
        .await;
    agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "x", "clientId": "k".repeat(129) }),
            "invalid_payload",
        )
        .await;

    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "n": deep });
    }
    let e = agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "x", "extra": deep }),
            "invalid_payload",
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("deep"), "{e}");
    let mut very_deep = json!(1);
    for _ in 0..500 {
        very_deep = json!([very_deep]);
    }
    agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "x", "extra": very_deep }),
            "invalid_payload",
        )
        .await;

    // Without an ack the refusal is an event, never silence.
    let mut quiet = server.connect("alice").await;
    quiet.emit("send_message", json!({ "contactId": c })).await;
    let err = quiet.next("livechat:error").await;
    assert_eq!(
        (err["event"].as_str(), err["code"].as_str()),
        (Some("send_message"), Some("invalid_payload"))
    );

    // Nothing of that was stored or broadcast, and the server still serves everyone.
    bystander.none("new_message", QUIET).await;
    agent
        .call_ok(
            "send_message",
            json!({ "contactId": c, "body": "still fine" }),
        )
        .await;
    assert_eq!(bystander.next("new_message").await["body"], "still fine");
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_only_that_connection() {
    let server = Server::start().await;
    let mut bystander = server.connect("alice").await;
    bystander
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;

    // A 1 MB body fits in the 1 MiB frame: refused by the body limit, connection kept.
    let agent = server.connect("alice").await;
    let one_mb = "x".repeat(1_000_000);
    agent
        .call_err(
            "send_message",
            json!({ "contactId": server.contact, "body": one_mb }),
            "payload_too_large",
        )
        .await;
    agent
        .call_ok("history", json!({ "contactId": server.contact }))
        .await;

    // 2 MiB is over the frame limit: that connection is closed, no answer comes.
    let hog = server.connect("alice").await;
    let two_mib = "x".repeat(2 * 1024 * 1024);
    let _ = hog
        .client
        .emit(
            "send_message",
            json!({ "contactId": server.contact, "body": two_mib }),
        )
        .await;
    bystander.none("new_message", QUIET).await;
    let after = hog
        .try_call("history", json!({ "contactId": server.contact }), QUIET)
        .await;
    assert_eq!(after, None, "the connection that sent 2 MiB is closed");

    let sender = server.connect("alice").await;
    sender
        .call_ok(
            "send_message",
            json!({ "contactId": server.contact, "body": "after the hog" }),
        )
        .await;
    assert_eq!(bystander.next("new_message").await["body"], "after the hog");
}

#[tokio::test]
async fn sends_over_the_budget_are_rate_limited_with_a_retry_hint() {
    let mut limits = Limits::default();
    limits.send_per_user = livechat_core::Rate::new(1, 3);
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let agent = server.connect("alice").await;
    for i in 0..3 {
        agent
            .call_ok(
                "send_message",
                json!({ "contactId": server.contact, "body": format!("b{i}") }),
            )
            .await;
    }
    let e = agent
        .call_err(
            "send_message",
            json!({ "contactId": server.contact, "body": "over" }),
            "rate_limited",
        )
        .await;
    let retry = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&retry), "{e}");
    // The budget is per user: a second socket of the same user shares it.
    let again = server.connect("alice").await;
    again
        .call_err(
            "send_message",
            json!({ "contactId": server.contact, "body": "over" }),
            "rate_limited",
        )
        .await;
    // Another user is unaffected.
    let bob = server.connect("bob").await;
    bob.call_ok(
        "send_message",
        json!({ "contactId": server.other_contact, "body": "fine" }),
    )
    .await;
}

#[tokio::test]
async fn a_socket_may_join_only_so_many_rooms() {
    let mut limits = Limits::default();
    limits.max_rooms_per_socket = 3;
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let agent = server.connect("alice").await;
    // Its own user room counts: two more fit.
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    agent
        .call_ok("join_contact", json!({ "contactId": server.contact }))
        .await;
    agent
        .call_ok("join_contact", json!({ "contactId": server.contact }))
        .await; // already in: fine
    let extra = livechat_core::model::ContactId::new_v4();
    server
        .chat
        .create_contact(livechat_core::store::NewContact {
            id: extra,
            workspace_id: server.ws,
            name: "x".into(),
            phone: None,
        })
        .await
        .unwrap();
    let e = agent
        .call_err("join_contact", json!({ "contactId": extra }), "forbidden")
        .await;
    assert!(
        e["message"].as_str().unwrap().contains("at most 3 rooms"),
        "{e}"
    );
    agent
        .call_ok("leave_contact", json!({ "contactId": server.contact }))
        .await;
    agent
        .call_ok("join_contact", json!({ "contactId": extra }))
        .await;
}

#[tokio::test]
async fn one_sockets_events_are_handled_in_the_order_they_were_sent() {
    let server = Server::start().await;
    let agent = server.connect("alice").await;
    // Fire without waiting for anything, as a fast client would.
    for i in 0..30 {
        agent
            .emit(
                "send_message",
                json!({ "contactId": server.contact, "body": format!("o{i}") }),
            )
            .await;
    }
    let page = agent
        .call_ok("sync", json!({ "contactId": server.contact, "after": 0 }))
        .await;
    let bodies: Vec<String> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("o{i}")).collect();
    assert_eq!(
        bodies, expected,
        "stored in the order sent, and the sync after them sees all"
    );
}

#[tokio::test]
async fn a_socket_is_disconnected_when_its_token_expires() {
    let server = Server::start().await;
    let short = livechat_core::auth::Claims::new("alice", chrono::Duration::seconds(2))
        .sign_hs256(SECRET)
        .unwrap();
    let agent =
        TestClient::connect(ClientBuilder::new(server.url()).auth(json!({ "token": short })))
            .await
            .expect("a token valid for 2 s is accepted");
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let long = server.connect("alice").await;
    assert_eq!(server.chat.connected_sockets(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.chat.connected_sockets() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired socket is still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other socket is untouched.
    long.call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
}

#[tokio::test]
async fn leaving_a_room_ends_its_deliveries_and_only_its_own() {
    let server = Server::start().await;
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    agent
        .call_ok("join_contact", json!({ "contactId": server.contact }))
        .await;
    let publish = |body: &'static str| {
        server.chat.publish(livechat_core::Publish::new(
            server.contact,
            livechat_core::model::Direction::Inbound,
            body,
        ))
    };
    publish("both rooms").await.unwrap();
    assert_eq!(agent.next("new_message").await["body"], "both rooms");

    let left = agent
        .call_ok("leave_workspace", json!({ "workspaceId": server.ws }))
        .await;
    assert_eq!(left["left"], json!(server.ws.to_string()));
    publish("contact room only").await.unwrap();
    assert_eq!(
        agent.next("new_message").await["body"],
        "contact room only",
        "still in the contact room"
    );
    agent
        .call_ok("leave_contact", json!({ "contactId": server.contact }))
        .await;
    publish("no room").await.unwrap();
    agent.none("new_message", Duration::from_millis(300)).await;
    // Leaving is free of checks: a room one was never in, or another workspace's.
    agent
        .call_ok("leave_workspace", json!({ "workspaceId": server.other_ws }))
        .await;
}

/// socket.io-client apps emit from their `connect` listener (join the inbox rooms at
/// once), so the first event can reach the server right behind the connect packet.
/// Each of many clients that connect together joins the moment it is connected, with
/// nothing in between: every join is answered, and every client then gets the next
/// message of the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_sent_the_moment_a_client_is_connected_is_answered_and_holds() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const CLIENTS: usize = 50;
    let _alone = alone().await;
    let mut limits = Limits::default();
    limits.max_connections_per_user = CLIENTS + 1;
    limits.max_connections_per_ip = CLIENTS + 1;
    limits.connect_rate_per_ip = livechat_core::Rate::new(1000, CLIENTS as u32 + 1);
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let auth = json!({ "token": token("bob") });
    let join = json!(["join_workspace", { "workspaceId": server.other_ws }]);
    let (joined_tx, mut joined) = tokio::sync::mpsc::channel::<()>(CLIENTS);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (url, auth, join, joined_tx) =
            (url.clone(), auth.clone(), join.clone(), joined_tx.clone());
        clients.spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(Message::text(format!("40{auth}"))).await.unwrap();
            let mut state = "not connected";
            let mut deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let frame = tokio::time::timeout_at(deadline, ws.next())
                    .await
                    .unwrap_or_else(|_| panic!("client {i}: {state} within {WAIT:?}"));
                let Some(Ok(Message::Text(text))) = frame else {
                    panic!("client {i}: connection closed");
                };
                if state == "not connected" && text.starts_with("40") {
                    state = "no answer to the join sent on connect";
                    ws.send(Message::text(format!("421{join}"))).await.unwrap();
                } else if text.starts_with("431") {
                    assert!(text.contains("\"ok\":true"), "client {i}: {text}");
                    state = "joined, but no new_message";
                    deadline = tokio::time::Instant::now() + 2 * WAIT;
                    joined_tx.send(()).await.unwrap();
                } else if text.starts_with("42[\"new_message\"") {
                    return;
                }
            }
        });
    }
    for _ in 0..CLIENTS {
        tokio::time::timeout(WAIT * 2, joined.recv())
            .await
            .expect("every client joined")
            .expect("joined");
    }
    let sender = server.connect("bob").await;
    sender
        .call_ok(
            "send_message",
            json!({ "contactId": server.other_contact, "body": "to everyone" }),
        )
        .await;
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
}
