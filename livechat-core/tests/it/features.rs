//! The live-chat features through real clients: typing, read receipts and unread
//! counts, reactions, presence and status changes — each with what must not happen.

use std::time::Duration;

use livechat_core::model::{Direction, MessageId, Role, Status, UserId};
use livechat_core::store::MemoryStore;
use livechat_core::{ChatError, Limits, Publish, Rate};
use serde_json::{Value, json};

use crate::harness::{Server, TestClient};

/// A server where carol is a second agent of workspace A.
async fn server_with(limits: Limits) -> Server {
    let server = Server::start_with(MemoryStore::new(), limits).await;
    server
        .chat
        .add_member(server.ws, UserId::from("carol"), Role::Agent)
        .await
        .unwrap();
    server
}

async fn in_contact(server: &Server, user: &str) -> TestClient {
    let c = server.connect(user).await;
    c.call_ok("join_contact", json!({ "contactId": server.contact }))
        .await;
    c
}

async fn in_workspace(server: &Server, user: &str) -> TestClient {
    let mut c = server.connect(user).await;
    c.call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    // Every join is answered with who is online; take it out of the way.
    c.next("presence").await;
    c
}

async fn inbound(server: &Server, body: &str) -> Value {
    let m = server
        .chat
        .publish(Publish::new(server.contact, Direction::Inbound, body))
        .await
        .unwrap();
    serde_json::to_value(m).unwrap()
}

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn typing_reaches_the_others_in_the_room_never_the_typist() {
    let mut limits = Limits::default();
    limits.typing_interval = Duration::from_millis(400);
    limits.typing_timeout = Duration::from_millis(600);
    let server = server_with(limits).await;
    let alice = in_contact(&server, "alice").await;
    let mut alice_tab = in_contact(&server, "alice").await;
    let mut carol = in_contact(&server, "carol").await;

    let typing = json!({ "contactId": server.contact, "isTyping": true });
    let ack = alice.call_ok("typing", typing.clone()).await;
    assert_eq!(ack["forwarded"], true);
    let got = carol.next("typing").await;
    assert_eq!(got["user_id"], "alice");
    assert_eq!(got["is_typing"], true);
    assert_eq!(got["contact_id"], json!(server.contact));

    // Repeated within the interval: keeps the state, tells nobody.
    let ack = alice.call_ok("typing", typing.clone()).await;
    assert_eq!(ack["forwarded"], false);
    carol.none("typing", Duration::from_millis(150)).await;

    let stop = json!({ "contactId": server.contact, "isTyping": false });
    alice.call_ok("typing", stop.clone()).await;
    assert_eq!(carol.next("typing").await["is_typing"], false);
    // A stop of someone not typing is not news.
    assert_eq!(alice.call_ok("typing", stop).await["forwarded"], false);
    carol.none("typing", Duration::from_millis(150)).await;

    // Without a stop it runs out by itself.
    alice.call_ok("typing", typing.clone()).await;
    assert_eq!(carol.next("typing").await["is_typing"], true);
    let started = tokio::time::Instant::now();
    assert_eq!(carol.next("typing").await["is_typing"], false);
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_secs(2),
        "the stop came after {after:?}, the timeout is 600 ms"
    );

    // A typist who goes away stops typing.
    alice.call_ok("typing", typing).await;
    assert_eq!(carol.next("typing").await["is_typing"], true);
    alice.close().await;
    assert_eq!(carol.next("typing").await["is_typing"], false);

    // The typist's own sockets never saw any of it.
    alice_tab.none("typing", QUIET).await;
    let mut alice = in_contact(&server, "alice").await;
    carol
        .call_ok(
            "typing",
            json!({ "contactId": server.contact, "isTyping": true }),
        )
        .await;
    assert_eq!(alice.next("typing").await["user_id"], "carol");
    carol.none("typing", QUIET).await;
}

#[tokio::test]
async fn typing_is_refused_outside_the_users_workspaces_and_over_budget() {
    let mut limits = Limits::default();
    limits.signals_per_socket = Rate::new(1, 3);
    let server = server_with(limits).await;
    let mut alice = in_contact(&server, "alice").await;
    let bob = server.connect("bob").await;
    bob.call_ok("join_contact", json!({ "contactId": server.other_contact }))
        .await;
    bob.call_err(
        "typing",
        json!({ "contactId": server.contact, "isTyping": true }),
        "forbidden",
    )
    .await;
    alice.none("typing", QUIET).await;

    let carol = in_contact(&server, "carol").await;
    for _ in 0..3 {
        carol
            .call_ok(
                "typing",
                json!({ "contactId": server.contact, "isTyping": true }),
            )
            .await;
    }
    let refused = carol
        .call_err(
            "typing",
            json!({ "contactId": server.contact, "isTyping": false }),
            "rate_limited",
        )
        .await;
    assert!(refused["retry_after_ms"].as_u64().unwrap() > 0, "{refused}");
    carol
        .call_err(
            "typing",
            json!({ "contactId": server.contact }),
            "invalid_payload",
        )
        .await;
}

#[tokio::test]
async fn reading_a_conversation_updates_unread_counts_and_tells_the_others() {
    let server = server_with(Limits::default()).await;
    let mut alice = in_workspace(&server, "alice").await;
    let carol = in_contact(&server, "carol").await;
    for body in ["one", "two", "three"] {
        inbound(&server, body).await;
    }
    // An agent's own reply is never unread.
    carol
        .call_ok(
            "send_message",
            json!({ "contactId": server.contact, "body": "reply" }),
        )
        .await;
    let counts = alice
        .call_ok("unread_counts", json!({ "workspaceId": server.ws }))
        .await;
    assert_eq!(counts["counts"], json!({ server.contact.to_string(): 3 }));

    let read = carol
        .call_ok(
            "mark_read",
            json!({ "contactId": server.contact, "upTo": 2 }),
        )
        .await;
    assert_eq!(read["updated"], 2);
    let event = alice.next("messages_read").await;
    assert_eq!(event["user_id"], "carol");
    assert_eq!(event["up_to"], 2);
    assert_eq!(event["updated"], 2);
    assert_eq!(event["contact_id"], json!(server.contact));

    let counts = alice
        .call_ok("unread_counts", json!({ "workspaceId": server.ws }))
        .await;
    assert_eq!(counts["counts"], json!({ server.contact.to_string(): 1 }));
    let page = alice
        .call_ok("history", json!({ "contactId": server.contact }))
        .await;
    let read: Vec<(i64, bool)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_i64().unwrap(), m["is_read"].as_bool().unwrap()))
        .collect();
    assert_eq!(read, [(4, false), (3, false), (2, true), (1, true)]);

    // Nothing changes: no event.
    carol
        .call_ok(
            "mark_read",
            json!({ "contactId": server.contact, "upTo": 1 }),
        )
        .await;
    alice.none("messages_read", QUIET).await;

    carol
        .call_err(
            "mark_read",
            json!({ "contactId": server.contact, "upTo": -1 }),
            "invalid_payload",
        )
        .await;
    let bob = server.connect("bob").await;
    bob.call_err(
        "mark_read",
        json!({ "contactId": server.contact, "upTo": 4 }),
        "forbidden",
    )
    .await;
    bob.call_err(
        "unread_counts",
        json!({ "workspaceId": server.ws }),
        "forbidden",
    )
    .await;
    let counts = bob
        .call_ok("unread_counts", json!({ "workspaceId": server.other_ws }))
        .await;
    assert_eq!(
        counts["counts"],
        json!({}),
        "bob's workspace has nothing unread"
    );
}

#[tokio::test]
async fn reactions_toggle_reach_the_rooms_and_come_with_history() {
    let mut limits = Limits::default();
    limits.max_reactions_per_user = 2;
    let server = server_with(limits).await;
    let mut carol = in_workspace(&server, "carol").await;
    let alice = in_contact(&server, "alice").await;
    let message = inbound(&server, "react to me").await;
    let id = message["id"].clone();

    let added = alice
        .call_ok("react", json!({ "messageId": id, "emoji": "👍" }))
        .await;
    assert_eq!(added["added"], true);
    let event = carol.next("reaction").await;
    assert_eq!(
        (
            event["emoji"].as_str(),
            event["user_id"].as_str(),
            event["added"].as_bool()
        ),
        (Some("👍"), Some("alice"), Some(true))
    );
    assert_eq!(event["message_id"], id);
    let page = carol
        .call_ok("history", json!({ "contactId": server.contact }))
        .await;
    assert_eq!(
        page["messages"][0]["reactions"],
        json!([{ "emoji": "👍", "user_id": "alice" }])
    );

    let removed = alice
        .call_ok("react", json!({ "messageId": id, "emoji": "👍" }))
        .await;
    assert_eq!(removed["added"], false);
    assert_eq!(carol.next("reaction").await["added"], false);
    let page = carol
        .call_ok("sync", json!({ "contactId": server.contact, "after": 0 }))
        .await;
    assert!(
        page["messages"][0].get("reactions").is_none(),
        "no reactions left: {page}"
    );

    for emoji in ["🎉", "❤️"] {
        alice
            .call_ok("react", json!({ "messageId": id, "emoji": emoji }))
            .await;
    }
    alice
        .call_err(
            "react",
            json!({ "messageId": id, "emoji": "🔥" }),
            "forbidden",
        )
        .await;
    for bad in ["", "a b", "x\u{7}", &"🙂".repeat(9)] {
        alice
            .call_err(
                "react",
                json!({ "messageId": id, "emoji": bad }),
                "invalid_payload",
            )
            .await;
    }
    alice
        .call_err(
            "react",
            json!({ "messageId": MessageId::new_v4(), "emoji": "👍" }),
            "not_found",
        )
        .await;
    let bob = server.connect("bob").await;
    bob.call_err(
        "react",
        json!({ "messageId": id, "emoji": "👍" }),
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn presence_counts_tabs_once_and_stays_in_its_workspace() {
    let server = server_with(Limits::default()).await;
    let mut alice = server.connect("alice").await;
    alice
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let list = alice.next("presence").await;
    assert_eq!(
        list,
        json!({ "workspace_id": server.ws, "online": ["alice"] })
    );
    let mut bob = server.connect("bob").await;
    bob.call_ok("join_workspace", json!({ "workspaceId": server.other_ws }))
        .await;
    assert_eq!(bob.next("presence").await["online"], json!(["bob"]));

    let mut carol = server.connect("carol").await;
    carol
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    assert_eq!(
        carol.next("presence").await["online"],
        json!(["alice", "carol"])
    );
    let came = alice.next("presence").await;
    assert_eq!(
        came,
        json!({ "workspace_id": server.ws, "user_id": "carol", "status": "online" })
    );

    // A second tab of carol is not news; closing one of two is not either.
    let mut carol_tab = server.connect("carol").await;
    carol_tab
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    carol_tab.next("presence").await;
    alice.none("presence", QUIET).await;
    carol_tab.close().await;
    alice.none("presence", QUIET).await;

    // Leaving the room counts like going away.
    carol
        .call_ok("leave_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let went = alice.next("presence").await;
    assert_eq!(
        (went["user_id"].as_str(), went["status"].as_str()),
        (Some("carol"), Some("offline"))
    );
    carol
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    assert_eq!(alice.next("presence").await["status"], "online");
    carol.close().await;
    assert_eq!(alice.next("presence").await["status"], "offline");

    // A removed member goes offline at once.
    let mut carol = server.connect("carol").await;
    carol
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    carol.next("presence").await;
    assert_eq!(alice.next("presence").await["status"], "online");
    server
        .chat
        .remove_member(server.ws, &UserId::from("carol"))
        .await
        .unwrap();
    assert_eq!(alice.next("presence").await["status"], "offline");
    carol.none("presence", QUIET).await;

    // Nothing of workspace A ever reached bob.
    bob.none("presence", QUIET).await;
}

#[tokio::test]
async fn status_changes_are_stored_emitted_and_never_go_back() {
    let server = server_with(Limits::default()).await;
    let mut alice = in_workspace(&server, "alice").await;
    let mut sms = Publish::new(server.contact, Direction::Outbound, "by sms");
    sms.status = Some(Status::Queued);
    let queued = server.chat.publish(sms).await.unwrap();
    assert_eq!(alice.next("new_message").await["status"], "queued");

    let sent = server
        .chat
        .update_status(queued.id, Status::Sent, Some("SM123".into()))
        .await
        .unwrap()
        .expect("queued → sent");
    assert_eq!(sent.seq, queued.seq);
    let event = alice.next("message_updated").await;
    assert_eq!(
        (
            event["status"].as_str(),
            event["twilio_sid"].as_str(),
            event["seq"].as_i64()
        ),
        (Some("sent"), Some("SM123"), Some(queued.seq))
    );
    assert!(
        server
            .chat
            .update_status(queued.id, Status::Sent, None)
            .await
            .unwrap()
            .is_none(),
        "a repeated report changes nothing"
    );
    alice.none("message_updated", QUIET).await;
    server
        .chat
        .update_status(queued.id, Status::Delivered, None)
        .await
        .unwrap()
        .expect("sent → delivered");
    assert_eq!(alice.next("message_updated").await["status"], "delivered");
    assert!(
        server
            .chat
            .update_status(queued.id, Status::Failed, None)
            .await
            .unwrap()
            .is_none(),
        "delivered is final"
    );
    alice.none("message_updated", QUIET).await;
    let page = alice
        .call_ok("history", json!({ "contactId": server.contact }))
        .await;
    assert_eq!(page["messages"][0]["status"], "delivered", "stored");
    match server
        .chat
        .update_status(MessageId::new_v4(), Status::Sent, None)
        .await
    {
        Err(ChatError::NotFound("message")) => {}
        other => panic!("a status for no message: {other:?}"),
    }
}

#[tokio::test]
async fn a_join_still_queued_when_its_socket_goes_never_leaves_it_online() {
    // Commits take 300 ms: the join waits behind the send in the socket's queue, and
    // the socket is gone before the join runs.
    let server = Server::start_with(
        crate::harness::SlowStore::new(Duration::from_millis(300)),
        Limits::default(),
    )
    .await;
    let alice = server.connect("alice").await;
    alice
        .emit(
            "send_message",
            json!({ "contactId": server.contact, "body": "then leave" }),
        )
        .await;
    alice
        .emit("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    alice.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.chat.stats().committed_messages < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the send never committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The queued join has had its turn right after the commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.chat.online_users(server.ws).is_empty(),
        "a socket that is gone counts as online: {:?}",
        server.chat.online_users(server.ws)
    );
    let mut carol = server.connect("carol").await;
    server
        .chat
        .add_member(server.ws, UserId::from("carol"), Role::Agent)
        .await
        .unwrap();
    carol
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    assert_eq!(carol.next("presence").await["online"], json!(["carol"]));
}
