//! Delivery guarantees over real sockets: recovery after an unclean drop, the
//! recovery limit, and slow consumers.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livechat_core::model::{ContactId, Direction};
use livechat_core::store::{MemoryStore, NewContact};
use livechat_core::{Limits, LiveChat, Publish};
use rust_socketio::asynchronous::ClientBuilder;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use livechat_core::testing::Gate;

use crate::harness::{Server, SlowStore, TestClient, WAIT, alone, token};

fn seqs(messages: &[Value]) -> Vec<i64> {
    messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_dropped_client_recovers_everything_in_order_without_duplicates() {
    let server = Server::start().await;
    let proxy = Gate::to(server.addr).await;
    let mut first = TestClient::connect(
        ClientBuilder::new(format!("http://{}", proxy.addr))
            .transport_type(rust_socketio::TransportType::Websocket)
            .auth(json!({ "token": token("alice") })),
    )
    .await
    .unwrap();
    first
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;

    // Messages flow the whole time; the connection is cut in the middle of them.
    let chat = server.chat.clone();
    let contact = server.contact;
    let sender = tokio::spawn(async move {
        for i in 0..300 {
            chat.publish(Publish::new(
                contact,
                Direction::Inbound,
                format!("flow {i}"),
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut live = Vec::new();
    while live.len() < 60 {
        live.push(first.next("new_message").await);
    }
    proxy.cut();
    // Whatever was already on its way to the first client before the cut still counts.
    live.extend(
        first
            .collect("new_message", Duration::from_millis(200))
            .await,
    );
    let last_seen = *seqs(&live).last().unwrap();

    let mut second = server.connect("alice").await;
    let joined = second
        .call_ok(
            "join_workspace",
            json!({ "workspaceId": server.ws, "after": last_seen }),
        )
        .await;
    assert_eq!(joined["complete"], true, "{joined}");
    sender.await.unwrap();
    let mut recovered = Vec::new();
    while seqs(&recovered).last().copied().unwrap_or(last_seen) < 300 {
        recovered.push(second.next("new_message").await);
    }
    recovered.extend(
        second
            .collect("new_message", Duration::from_millis(300))
            .await,
    );

    let mut all = seqs(&live);
    all.extend(seqs(&recovered));
    assert_eq!(
        all,
        (1..=300).collect::<Vec<_>>(),
        "live ∪ recovered = everything sent, in order, once"
    );
    eprintln!(
        "reconnect: sent 300, live before the cut {}, replayed and live after {}, recovered {}",
        live.len(),
        recovered.len(),
        joined["recovered"]
    );
}

#[tokio::test]
async fn a_seed_style_join_with_after_gets_the_backlog_and_a_recovery_event() {
    let server = Server::start().await;
    for i in 0..5 {
        server
            .chat
            .publish(Publish::new(
                server.contact,
                Direction::Inbound,
                format!("b{i}"),
            ))
            .await
            .unwrap();
    }
    let mut agent = server.connect("alice").await;
    agent
        .emit(
            "join_contact",
            json!({ "contactId": server.contact, "after": 2 }),
        )
        .await;
    let events = agent.all_events(Duration::from_millis(500)).await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "new_message",
            "new_message",
            "new_message",
            "livechat:recovery"
        ],
        "{events:?}"
    );
    let replayed: Vec<Value> = events[..3].iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(seqs(&replayed), [3, 4, 5]);
    assert_eq!(
        events[3].1,
        json!({ "room": format!("contact:{}", server.contact), "recovered": 3, "complete": true })
    );
}

#[tokio::test]
async fn too_much_missed_is_said_plainly_and_live_delivery_goes_on() {
    let mut limits = Limits::default();
    limits.max_recovery_messages = 5;
    let server = Server::start_with(MemoryStore::new(), limits).await;
    for i in 0..10 {
        server
            .chat
            .publish(Publish::new(
                server.contact,
                Direction::Inbound,
                format!("m{i}"),
            ))
            .await
            .unwrap();
    }
    let mut agent = server.connect("alice").await;
    let joined = agent
        .call_ok(
            "join_workspace",
            json!({ "workspaceId": server.ws, "after": 0 }),
        )
        .await;
    assert_eq!(
        joined["complete"], false,
        "10 missed with a limit of 5: {joined}"
    );
    agent.none("new_message", Duration::from_millis(200)).await;
    server
        .chat
        .publish(Publish::new(server.contact, Direction::Inbound, "live"))
        .await
        .unwrap();
    assert_eq!(agent.next("new_message").await["seq"], 11);
    assert_eq!(server.chat.stats().recovery_misses, 1);
}

/// A websocket client that completes the handshake, joins, then never reads again.
async fn stalled_client(server: &Server) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::Message;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small receive window fills fast, so the server's buffer for it fills too.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let auth = json!({ "token": token("alice") });
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    let join = json!(["join_workspace", { "workspaceId": server.ws }]);
    ws.send(Message::text(format!("42{join}"))).await.unwrap();
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_never_slows_the_others() {
    let _alone = alone().await;
    let mut limits = Limits::default();
    limits.socket_buffer_packets = 16;
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let mut fast = server.connect("alice").await;
    fast.call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let stalled = stalled_client(&server).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.chat.connected_sockets() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its join is queued right behind its connect; give the handler a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let body = "x".repeat(16_000);
    let started = tokio::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..600 {
        let sent_at = tokio::time::Instant::now();
        server
            .chat
            .publish(Publish::new(
                server.contact,
                Direction::Inbound,
                format!("{i} {body}"),
            ))
            .await
            .unwrap();
        let got = fast.next("new_message").await;
        assert_eq!(got["seq"], i + 1);
        slowest = slowest.max(sent_at.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a delivery to the fast client took {slowest:?}"
    );
    // Noticed once: after the cut-off it is in no room, so nothing more is queued for it
    // and its memory stays at the bounded buffer it had.
    let stats = server.chat.stats();
    assert_eq!(stats.slow_consumer_disconnects, 1, "{stats:?}");
    eprintln!(
        "slow consumer: 600 messages of 16 kB in {:?}, slowest delivery to the fast client {slowest:?}",
        started.elapsed()
    );

    // Once it reads again it finds at most what its bounded buffers held, not the
    // 600 messages, and then the disconnect that tells it to reconnect and recover.
    let mut stalled = stalled;
    let (mut queued, mut told) = (0, false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, stalled.next()).await {
        match frame {
            Ok(tokio_tungstenite::tungstenite::Message::Text(text)) if text.starts_with("42") => {
                queued += 1
            }
            Ok(tokio_tungstenite::tungstenite::Message::Text(text)) if text.as_str() == "41" => {
                told = true;
                break;
            }
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    eprintln!("slow consumer: {queued} messages were still queued for it when it read again");
    assert!(told, "the cut-off client was never told to disconnect");
    assert!(queued < 600, "everything was queued for the stalled client");

    // When its connection finally goes, the socket goes with it.
    drop(stalled);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.chat.connected_sockets() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled socket outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn messages_committed_during_the_backlog_read_come_once_and_in_order() {
    // The backlog read takes 150 ms while messages keep committing: they are both in
    // the store's answer and in the live buffer, and must still be delivered once.
    let mut store = SlowStore::new(Duration::ZERO);
    store.sync_delay = Duration::from_millis(150);
    let server = Server::start_with(store, Limits::default()).await;
    for i in 0..10 {
        server
            .chat
            .publish(Publish::new(
                server.contact,
                Direction::Inbound,
                format!("before {i}"),
            ))
            .await
            .unwrap();
    }
    let chat = server.chat.clone();
    let contact = server.contact;
    let during = tokio::spawn(async move {
        for i in 0..40 {
            chat.publish(Publish::new(
                contact,
                Direction::Inbound,
                format!("during {i}"),
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut agent = server.connect("alice").await;
    let joined = agent
        .call_ok(
            "join_workspace",
            json!({ "workspaceId": server.ws, "after": 3 }),
        )
        .await;
    assert_eq!(joined["complete"], true);
    during.await.unwrap();
    let got = agent
        .collect("new_message", Duration::from_millis(300))
        .await;
    assert_eq!(
        seqs(&got),
        (4..=50).collect::<Vec<_>>(),
        "no gap, no duplicate, in order"
    );
}

#[tokio::test]
async fn a_flood_of_announcements_from_other_nodes_never_refuses_local_sends() {
    let _alone = alone().await;
    // Commits take 100 ms and only four sends may wait for one; meanwhile another
    // node's feed announces commits as fast as it can. Sends must still get in.
    let mut limits = Limits::default();
    limits.commit_queue = 4;
    let server = Server::start_with(SlowStore::new(Duration::from_millis(100)), limits).await;
    let agent = server.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut floods = Vec::new();
    for _ in 0..8 {
        let chat = server.chat.clone();
        let ws = server.ws;
        let flooding = flooding.clone();
        floods.push(tokio::spawn(async move {
            // Bursts, not a spin: each burst of 8 × 64 fills a queue of 4 many times
            // over (the shared queue this guards against refused sends at once), and
            // the pauses keep the test from taking a whole core from the tests beside it.
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..64 {
                    chat.announced(ws, 1).await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    for i in 0..3 {
        let sent = agent
            .call_ok(
                "send_message",
                json!({ "contactId": server.contact, "body": format!("m{i}") }),
            )
            .await;
        assert_eq!(sent["seq"], i + 1, "{sent}");
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    for f in floods {
        f.await.unwrap();
    }
}

#[tokio::test]
async fn a_gap_the_store_cannot_fill_is_counted_and_the_message_still_delivered() {
    let store = SlowStore::new(Duration::ZERO);
    let failing_sync = store.failing_sync.clone();
    let server = Server::start_with(store, Limits::default()).await;
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let first = server
        .chat
        .publish(Publish::new(server.contact, Direction::Inbound, "first"))
        .await
        .unwrap();
    assert_eq!(
        agent.take("new_message", 1, WAIT).await[0]["seq"],
        first.seq
    );
    let gaps_before = server.chat.stats().delivery_gaps;

    // Another node's message two ahead: the one between cannot be read.
    failing_sync.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut ahead = first.clone();
    ahead.id = livechat_core::model::MessageId::new_v7();
    ahead.seq = first.seq + 2;
    ahead.body = "from another node".into();
    server.chat.committed_elsewhere(ahead.clone()).await;
    let got = agent.take("new_message", 1, WAIT).await;
    assert_eq!(
        got[0]["seq"], ahead.seq,
        "delivered rather than held: {got:?}"
    );
    assert_eq!(
        server.chat.stats().delivery_gaps,
        gaps_before + 1,
        "a gap left unfilled is counted"
    );
}

#[tokio::test]
async fn recovering_a_room_skips_what_another_room_already_delivered() {
    // The seed's order: join the contact room, then the workspace room with `after`,
    // while messages of that contact and of another one keep committing and the
    // backlog read is slow. What came live through the contact room must not come
    // again from the workspace's recovery; everything else comes once.
    let mut store = SlowStore::new(Duration::ZERO);
    store.sync_delay = Duration::from_millis(150);
    let server = Server::start_with(store, Limits::default()).await;
    let other = ContactId::new_v4();
    server
        .chat
        .create_contact(NewContact {
            id: other,
            workspace_id: server.ws,
            name: "Other".into(),
            phone: None,
        })
        .await
        .unwrap();
    let publish = |chat: LiveChat, contact, body: String| async move {
        chat.publish(Publish::new(contact, Direction::Inbound, body))
            .await
            .unwrap()
    };
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_contact", json!({ "contactId": server.contact }))
        .await;
    for i in 0..10 {
        let contact = if i % 2 == 0 { server.contact } else { other };
        publish(server.chat.clone(), contact, format!("before {i}")).await;
    }
    let live = agent.take("new_message", 5, WAIT).await;
    assert_eq!(
        seqs(&live),
        [1, 3, 5, 7, 9],
        "the contact room's share, live"
    );

    let (chat, contact) = (server.chat.clone(), server.contact);
    let during = tokio::spawn(async move {
        for i in 0..30 {
            let to = if i % 2 == 0 { contact } else { other };
            publish(chat.clone(), to, format!("during {i}")).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let joined = agent
        .call_ok(
            "join_workspace",
            json!({ "workspaceId": server.ws, "after": 0 }),
        )
        .await;
    assert_eq!(joined["complete"], true, "{joined}");
    during.await.unwrap();
    let mut got = live;
    got.extend(
        agent
            .collect("new_message", Duration::from_millis(400))
            .await,
    );
    let mut all = seqs(&got);
    let received = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        received,
        all.len(),
        "a message came twice: {:?}",
        seqs(&got)
    );
    assert_eq!(all, (1..=40).collect::<Vec<_>>(), "every message, once");
    for c in [server.contact, other] {
        let of_contact: Vec<i64> = got
            .iter()
            .filter(|m| m["contact_id"] == json!(c))
            .map(|m| m["seq"].as_i64().unwrap())
            .collect();
        assert!(
            of_contact.windows(2).all(|w| w[0] < w[1]),
            "each conversation in order: {of_contact:?}"
        );
    }

    // The other way round: in the workspace room first, then the contact room with
    // `after`: everything of that contact already came live, nothing is replayed.
    let mut second = server.connect("alice").await;
    second
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    publish(server.chat.clone(), server.contact, "last".into()).await;
    assert_eq!(second.next("new_message").await["seq"], 41);
    let joined = second
        .call_ok(
            "join_contact",
            json!({ "contactId": server.contact, "after": 0 }),
        )
        .await;
    let replayed = second
        .collect("new_message", Duration::from_millis(300))
        .await;
    assert_eq!(
        seqs(&replayed),
        (1..=39).step_by(2).collect::<Vec<_>>(),
        "only what came before the workspace join: {joined}"
    );
}
