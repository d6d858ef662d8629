//! Several nodes on one Postgres: the Redis fan-out, the change feed, and outages of
//! either. Needs `LIVECHAT_TEST_POSTGRES_URL` and `LIVECHAT_TEST_REDIS_URL`; without
//! them each test says it was skipped.

use std::collections::HashSet;
use std::time::Duration;

use livechat_core::Limits;
use livechat_core::cluster::{ChangeFeed, RedisFanout};
use livechat_core::store::PostgresStore;
use livechat_core::testing::{Gate, PrivateRedis, ScratchDatabase, test_redis_url};
use serde_json::{Value, json};

use crate::harness::{Server, TestClient};

/// A node on `store`, with an optional Redis fan-out on `channel`, sharing the first
/// node's workspace and contact (when given).
async fn node(
    store: &PostgresStore,
    redis: Option<(&str, &str)>,
    first: Option<&Server>,
) -> (Server, Option<RedisFanout>) {
    let fanout = match redis {
        Some((url, channel)) => Some(RedisFanout::connect_on(url, channel).await.unwrap()),
        None => None,
    };
    let with_fanout = fanout.clone();
    let mut server =
        Server::start_custom(
            store.clone(),
            Limits::default(),
            move |b| match with_fanout {
                Some(f) => b.fanout(f),
                None => b,
            },
        )
        .await;
    if let Some(f) = &fanout {
        f.deliver_to(server.chat.clone());
    }
    if let Some(first) = first {
        server.ws = first.ws;
        server.contact = first.contact;
    }
    (server, fanout)
}

/// The seqs of `new_message` events until `n` arrived (failing after 10 s), and of
/// any that follow right after.
async fn seqs_of(client: &mut TestClient, n: usize, who: &str) -> Vec<i64> {
    let got = client.take("new_message", n, Duration::from_secs(10)).await;
    let seqs: Vec<i64> = got.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.len() >= n,
        "{who} got {} of {n} messages: {seqs:?}",
        seqs.len()
    );
    seqs
}

async fn sends(client: &TestClient, contact: livechat_core::model::ContactId, tag: &str, n: usize) {
    for i in 0..n {
        let key = format!("{tag}{i}");
        client
            .call_ok(
                "send_message",
                json!({ "contactId": contact, "body": key, "clientId": key }),
            )
            .await;
    }
}

fn channel() -> String {
    format!("livechat:test:{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_every_message_once_and_in_order() {
    let test = "two_nodes_deliver_every_message_once_and_in_order";
    let (Some(db), Some(redis)) = (ScratchDatabase::create(test).await, test_redis_url(test))
    else {
        return;
    };
    let store = PostgresStore::open(&db.url).await.unwrap();
    let channel = channel();
    let (a, _fa) = node(&store, Some((&redis, &channel)), None).await;
    let (b, _fb) = node(&store, Some((&redis, &channel)), Some(&a)).await;
    let _feeds = [
        ChangeFeed::start(store.pool().clone(), a.chat.clone()),
        ChangeFeed::start(store.pool().clone(), b.chat.clone()),
    ];

    let mut on_a = a.connect("alice").await;
    on_a.call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;
    let mut on_b = b.connect("alice").await;
    on_b.call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;
    // In both rooms: still once per message.
    on_b.call_ok("join_contact", json!({ "contactId": a.contact }))
        .await;

    let send_a = a.connect("alice").await;
    let send_b = b.connect("alice").await;
    const EACH: usize = 25;
    let contact = a.contact;
    tokio::join!(
        sends(&send_a, contact, "a", EACH),
        sends(&send_b, contact, "b", EACH)
    );

    let expected: Vec<i64> = (1..=(2 * EACH) as i64).collect();
    for (client, who) in [
        (&mut on_a, "the agent on node A"),
        (&mut on_b, "the agent on node B"),
    ] {
        let seqs = seqs_of(client, 2 * EACH, who).await;
        assert_eq!(seqs, expected, "{who}: every message once, in seq order");
    }
    store.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_with_plain_sql_reach_agents_and_an_outage_of_the_feed_is_caught_up() {
    let test = "rows_inserted_with_plain_sql_reach_agents_and_an_outage_of_the_feed_is_caught_up";
    let Some(db) = ScratchDatabase::create(test).await else {
        return;
    };
    let store = PostgresStore::open(&db.url).await.unwrap();
    let (a, _) = node(&store, None, None).await;
    // The feed reaches Postgres through a gate the test can cut.
    let target: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let gate = Gate::to(target).await;
    let feed_url = db.url.replace("127.0.0.1:5432", &gate.addr.to_string());
    assert_ne!(
        feed_url, db.url,
        "the test database is expected on 127.0.0.1:5432"
    );
    let feed_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&feed_url)
        .await
        .unwrap();
    let feed = ChangeFeed::start(feed_pool, a.chat.clone());

    let mut agent = a.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;
    wait_for(|| feed.is_listening(), "the feed to listen").await;

    // What another program does: a plain INSERT, no seq, no id.
    let insert = |body: String| {
        let pool = store.pool().clone();
        let (ws, contact) = (a.ws, a.contact);
        async move {
            sqlx::query(
                "INSERT INTO livechat_messages (contact_id, workspace_id, body, direction) \
                 VALUES ($1, $2, $3, 'inbound')",
            )
            .bind(contact.0)
            .bind(ws.0)
            .bind(body)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    insert("from another program".into()).await;
    let m = agent.next("new_message").await;
    assert_eq!(m["body"], "from another program");
    assert_eq!(m["seq"], 1);
    assert_eq!(m["direction"], "inbound");

    gate.cut();
    wait_for(|| !feed.is_listening(), "the feed to notice the outage").await;
    for i in 0..30 {
        insert(format!("burst {i}")).await;
    }
    agent.none("new_message", Duration::from_millis(300)).await;
    gate.restore();
    let burst = agent.take("new_message", 30, Duration::from_secs(10)).await;
    let seqs: Vec<i64> = burst.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (2..=31).collect::<Vec<_>>(),
        "the burst, caught up once and in order"
    );
    assert!(feed.connects() >= 2, "the feed reconnected");
    store.close().await;
    db.drop_database().await;
}

async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waited 10 s for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_fanout_subscribes_again_after_a_redis_restart() {
    let test = "the_redis_fanout_subscribes_again_after_a_redis_restart";
    let (Some(db), Some(_)) = (ScratchDatabase::create(test).await, test_redis_url(test)) else {
        return;
    };
    let mut redis = PrivateRedis::start().await;
    let store = PostgresStore::open(&db.url).await.unwrap();
    // No change feed: Redis is the only road between the nodes here.
    let url = redis.url();
    let (a, _fa) = node(&store, Some((&url, "livechat:messages")), None).await;
    let (b, fb) = node(&store, Some((&url, "livechat:messages")), Some(&a)).await;
    let fb = fb.unwrap();
    let sender = a.connect("alice").await;
    let mut agent = b.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;
    let send = |body: &str| {
        sender.call_ok(
            "send_message",
            json!({ "contactId": a.contact, "body": body }),
        )
    };
    send("before").await;
    assert_eq!(agent.next("new_message").await["body"], "before");

    redis.kill().await;
    // Storage is up: sends are still stored and acknowledged.
    for i in 0..5 {
        send(&format!("during {i}")).await;
    }
    redis.start_again().await;
    wait_for(|| fb.counts().3 >= 1, "node B to subscribe again").await;
    send("after").await;
    let got: Vec<Value> = agent.take("new_message", 6, Duration::from_secs(10)).await;
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        [
            "during 0", "during 1", "during 2", "during 3", "during 4", "after"
        ],
        "what was sent during the outage is caught up, then live delivery goes on"
    );
    let distinct: HashSet<i64> = got.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(distinct.len(), got.len());
    store.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_on_one_node_leaves_the_rooms_on_every_node() {
    use livechat_core::model::{Direction, Role, UserId};
    let test = "a_member_removed_on_one_node_leaves_the_rooms_on_every_node";
    let Some(db) = ScratchDatabase::create(test).await else {
        return;
    };
    let store = PostgresStore::open(&db.url).await.unwrap();
    let (a, _) = node(&store, None, None).await;
    let (b, _) = node(&store, None, Some(&a)).await;
    let _feeds = [
        ChangeFeed::start(store.pool().clone(), a.chat.clone()),
        ChangeFeed::start(store.pool().clone(), b.chat.clone()),
    ];
    a.chat
        .add_member(a.ws, UserId::from("carol"), Role::Agent)
        .await
        .unwrap();
    let mut alice = b.connect("alice").await;
    alice
        .call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;
    alice
        .call_ok("join_contact", json!({ "contactId": a.contact }))
        .await;
    let mut carol = b.connect("carol").await;
    carol
        .call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;

    // Removed on node A; alice's sockets are on node B.
    assert!(
        a.chat
            .remove_member(a.ws, &UserId::from("alice"))
            .await
            .unwrap()
    );
    a.chat
        .publish(livechat_core::Publish::new(
            a.contact,
            Direction::Inbound,
            "after removal",
        ))
        .await
        .unwrap();
    // The removal commits before the message, and the feed keeps commit order: by the
    // time carol has the message, alice is out of both rooms.
    assert_eq!(carol.next("new_message").await["body"], "after removal");
    alice.none("new_message", Duration::from_millis(300)).await;
    store.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_typing_and_receipts_cross_nodes() {
    let test = "presence_typing_and_receipts_cross_nodes";
    let (Some(db), Some(redis)) = (ScratchDatabase::create(test).await, test_redis_url(test))
    else {
        return;
    };
    let store = PostgresStore::open(&db.url).await.unwrap();
    let channel = channel();
    let (a, _fa) = node(&store, Some((&redis, &channel)), None).await;
    let (b, _fb) = node(&store, Some((&redis, &channel)), Some(&a)).await;
    a.chat
        .add_member(a.ws, "carol".into(), livechat_core::model::Role::Agent)
        .await
        .unwrap();

    let mut alice = a.connect("alice").await;
    alice
        .call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;
    assert_eq!(alice.next("presence").await["online"], json!(["alice"]));
    alice
        .call_ok("join_contact", json!({ "contactId": a.contact }))
        .await;

    // Carol on the other node: each sees the other, once node B has heard of alice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.chat.online_users(a.ws) != ["alice".into()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B never heard alice came"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut carol = b.connect("carol").await;
    carol
        .call_ok("join_workspace", json!({ "workspaceId": a.ws }))
        .await;
    carol
        .call_ok("join_contact", json!({ "contactId": a.contact }))
        .await;
    let list = carol.next("presence").await;
    assert_eq!(
        list["online"],
        json!(["alice", "carol"]),
        "node B knows alice: {list}"
    );
    let came = alice.next("presence").await;
    assert_eq!(
        (came["user_id"].as_str(), came["status"].as_str()),
        (Some("carol"), Some("online"))
    );

    carol
        .call_ok(
            "typing",
            json!({ "contactId": a.contact, "isTyping": true }),
        )
        .await;
    let typing = alice.next("typing").await;
    assert_eq!(
        (typing["user_id"].as_str(), typing["is_typing"].as_bool()),
        (Some("carol"), Some(true))
    );

    let m = alice
        .call_ok(
            "send_message",
            json!({ "contactId": a.contact, "body": "hi", "direction": "inbound" }),
        )
        .await;
    carol.next("new_message").await;
    carol
        .call_ok(
            "mark_read",
            json!({ "contactId": a.contact, "upTo": m["seq"] }),
        )
        .await;
    assert_eq!(alice.next("messages_read").await["user_id"], "carol");
    carol
        .call_ok("react", json!({ "messageId": m["id"], "emoji": "👍" }))
        .await;
    assert_eq!(alice.next("reaction").await["emoji"], "👍");

    // Carol's node notices her going and says so; alice's node passes it on.
    carol.close().await;
    let went = alice.next("presence").await;
    assert_eq!(
        (went["user_id"].as_str(), went["status"].as_str()),
        (Some("carol"), Some("offline"))
    );
    let typing = alice.next("typing").await;
    assert_eq!(
        typing["is_typing"], false,
        "carol stopped typing as she went"
    );
    store.close().await;
}
