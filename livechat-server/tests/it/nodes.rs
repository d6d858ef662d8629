//! Several server processes on one Postgres and one Redis: delivery across nodes, a
//! node killed with SIGKILL, Redis and Postgres restarted under load, rows written
//! with `psql`. Needs `LIVECHAT_TEST_POSTGRES_URL` and `LIVECHAT_TEST_REDIS_URL` (and
//! the server binaries of both); without the URLs each test says it was skipped.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use livechat_core::testing::{
    Gate, PrivatePostgres, PrivateRedis, ScratchDatabase, test_redis_url,
};
use rust_socketio::TransportType;
use serde_json::{Value, json};

use crate::harness::{Banner, SECRET, SocketClient, SocketClientBuilder, spawn_binary};

/// One server process with its own working directory.
struct Node {
    child: tokio::process::Child,
    banner: Banner,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(database_url: &str, redis: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--jwt-secret",
            SECRET,
            // The traffic is the point here, not the send budgets.
            "--rate-limit-per-sec",
            "100000",
            "--rate-limit-burst",
            "100000",
            "--socket-rate-limit-per-sec",
            "100000",
            "--socket-rate-limit-burst",
            "100000",
            "--workspace-rate-limit-per-sec",
            "100000",
            "--workspace-rate-limit-burst",
            "100000",
        ];
        if let Some((url, channel)) = redis {
            args.extend(["--redis-url", url, "--redis-channel", channel]);
        }
        let (child, banner) = spawn_binary(dir.path(), &args).await;
        Self {
            child,
            banner,
            _dir: dir,
        }
    }

    async fn agent(&self) -> SocketClient {
        SocketClientBuilder::new(
            &self.banner.url,
            &self.banner.token,
            TransportType::Websocket,
        )
        .connect()
        .await
    }

    /// An agent in the workspace room (and, with `contact_too`, the contact room).
    async fn listening_agent(&self, contact_too: bool) -> SocketClient {
        let agent = self.agent().await;
        agent
            .call(
                "join_workspace",
                json!({ "workspaceId": self.banner.workspace }),
            )
            .await;
        if contact_too {
            agent
                .call("join_contact", json!({ "contactId": self.banner.contact }))
                .await;
        }
        agent
    }

    /// `/readyz`: the status code and the body.
    async fn ready(&self) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}/readyz", self.banner.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("/readyz answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn wait_ready(&self, ready: bool, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.ready().await;
            if (status == 200) == ready {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "waited 20 s for /readyz to say {what}; it says {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn channel() -> String {
    format!("livechat:test:{}", uuid::Uuid::new_v4().simple())
}

/// The workspace's last `seq` so far: the demo workspace starts with a few messages.
async fn last_seq(client: &SocketClient, workspace: &str) -> i64 {
    let page = client
        .call(
            "sync",
            json!({ "workspaceId": workspace, "after": 0, "limit": 500 }),
        )
        .await;
    assert_eq!(page["has_more"], false, "{page}");
    seqs(page["messages"].as_array().unwrap())
        .into_iter()
        .max()
        .unwrap_or(0)
}

fn seqs(messages: &[Value]) -> Vec<i64> {
    messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

/// Sends `n` messages with keys `tag-0..`, each retried with the same key until it is
/// acked (a node may be between two states); returns the acked messages by key.
async fn send_all(
    client: &SocketClient,
    contact: &str,
    tag: &str,
    n: usize,
) -> BTreeMap<String, Value> {
    let mut acked = BTreeMap::new();
    for i in 0..n {
        let key = format!("{tag}-{i}");
        let payload = json!({ "contactId": contact, "body": key, "clientId": key });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client
                .try_call("send_message", payload.clone(), Duration::from_secs(3))
                .await
            {
                Some(reply) if reply["ok"] == true => {
                    acked.insert(key, reply["data"].clone());
                    break;
                }
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "{key} not acked within 30 s: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_to_every_socket_once_in_order() {
    let test = "three_nodes_deliver_every_message_to_every_socket_once_in_order";
    let (Some(db), Some(redis)) = (ScratchDatabase::create(test).await, test_redis_url(test))
    else {
        return;
    };
    let channel = channel();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start(&db.url, Some((&redis, &channel))).await);
    }
    // Two agents per node; one of each pair is in both rooms.
    let mut agents = Vec::new();
    for node in &nodes {
        agents.push(node.listening_agent(false).await);
        agents.push(node.listening_agent(true).await);
    }
    const EACH: usize = 30;
    let contact = nodes[0].banner.contact.clone();
    let senders: Vec<SocketClient> =
        futures_util::future::join_all(nodes.iter().map(Node::agent)).await;
    let base = last_seq(&senders[0], &nodes[0].banner.workspace).await;
    let started = Instant::now();
    let sends = senders
        .iter()
        .enumerate()
        .map(|(n, s)| send_all(s, &contact, ["a", "b", "c"][n], EACH));
    let acked: Vec<BTreeMap<String, Value>> = futures_util::future::join_all(sends).await;
    let total = 3 * EACH;
    assert_eq!(acked.iter().map(BTreeMap::len).sum::<usize>(), total);

    let expected: Vec<i64> = (base + 1..=base + total as i64).collect();
    for (i, agent) in agents.iter_mut().enumerate() {
        let got = agent
            .take("new_message", total, Duration::from_secs(10))
            .await;
        assert_eq!(
            seqs(&got),
            expected,
            "agent {i} (node {}): every message once, in seq order",
            i / 2
        );
    }
    eprintln!(
        "3 nodes: {total} messages from 3 senders reached 6 sockets in {:?}",
        started.elapsed()
    );
    for mut node in nodes {
        let _ = node.child.start_kill();
        let _ = node.child.wait().await;
    }
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_node_killed_with_sigkill_recover_on_another_node_without_loss() {
    let test = "clients_of_a_node_killed_with_sigkill_recover_on_another_node_without_loss";
    let (Some(db), Some(redis)) = (ScratchDatabase::create(test).await, test_redis_url(test))
    else {
        return;
    };
    let channel = channel();
    let mut a = Node::start(&db.url, Some((&redis, &channel))).await;
    let b = Node::start(&db.url, Some((&redis, &channel))).await;
    let contact = b.banner.contact.clone();
    let mut on_a = a.listening_agent(false).await;
    let sender = b.agent().await;
    let base = last_seq(&sender, &b.banner.workspace).await;

    send_all(&sender, &contact, "before", 10).await;
    let before = on_a.take("new_message", 10, Duration::from_secs(10)).await;
    assert_eq!(seqs(&before), (base + 1..=base + 10).collect::<Vec<_>>());
    let last_seen = base + 10;

    a.child.start_kill().unwrap(); // SIGKILL
    a.child.wait().await.unwrap();
    drop(on_a);
    // While the agent is away, the conversation goes on on node B.
    send_all(&sender, &contact, "during", 15).await;

    // The agent's app reconnects (to the other node) and asks for what it missed.
    let mut moved = b.agent().await;
    let joined = moved
        .call(
            "join_workspace",
            json!({ "workspaceId": b.banner.workspace, "after": last_seen }),
        )
        .await;
    assert_eq!(joined["recovered"], 15, "{joined}");
    assert_eq!(joined["complete"], true, "{joined}");
    send_all(&sender, &contact, "after", 5).await;
    let got = moved.take("new_message", 20, Duration::from_secs(10)).await;
    assert_eq!(
        seqs(&got),
        (base + 11..=base + 30).collect::<Vec<_>>(),
        "the missed messages, then live ones: none lost, none twice"
    );
    db.drop_database().await;
}

/// A sender keeps sending (retrying each message with its key until acked) through
/// `during`; afterwards, every acked message is stored once and reached the agent once.
async fn light_load_through<F: std::future::Future<Output = ()>>(
    sender: &SocketClient,
    agent: &mut SocketClient,
    contact: &str,
    during: F,
) -> usize {
    let load = async {
        let mut acked = BTreeMap::new();
        let mut round = 0;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let sending = async {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                acked.extend(send_all(sender, contact, &format!("load{round}"), 1).await);
                round += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let outage = async {
            during.await;
            // A little more load after recovery.
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        tokio::join!(sending, outage);
        acked
    };
    let acked = load.await;
    let got = agent
        .take("new_message", acked.len(), Duration::from_secs(20))
        .await;
    let received: Vec<i64> = seqs(&got);
    let distinct: HashSet<i64> = received.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        received.len(),
        "a message came twice: {received:?}"
    );
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "out of order: {received:?}"
    );
    for (key, message) in &acked {
        assert!(
            distinct.contains(&message["seq"].as_i64().unwrap()),
            "acked {key} (seq {}) never reached the agent",
            message["seq"]
        );
    }
    acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_loses_nothing_and_readiness_follows() {
    let test = "a_redis_restart_under_load_loses_nothing_and_readiness_follows";
    let (Some(db), Some(_)) = (ScratchDatabase::create(test).await, test_redis_url(test)) else {
        return;
    };
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let a = Node::start(&db.url, Some((&url, "livechat:messages"))).await;
    let b = Node::start(&db.url, Some((&url, "livechat:messages"))).await;
    let contact = a.banner.contact.clone();
    let sender = a.agent().await;
    let mut agent = b.listening_agent(false).await;
    let (status, body) = b.ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redis"], "up", "{body}");
    assert_eq!(body["redis_subscription"], "subscribed", "{body}");

    let started = Instant::now();
    let acked = light_load_through(&sender, &mut agent, &contact, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.kill().await;
        let down = b.wait_ready(false, "not ready while Redis is down").await;
        assert_eq!(down["redis"], "down", "{down}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // By now the lost connection has been seen: the subscription counts as gone.
        let (status, down) = b.ready().await;
        assert_eq!(status, 503, "{down}");
        assert_eq!(down["redis_subscription"], "down", "{down}");
        redis.start_again().await;
        // Ready again only once the node has subscribed again, not merely once PING
        // answers: a reconnect without the subscription would stop cross-node delivery.
        let up = b.wait_ready(true, "ready once Redis is back").await;
        assert_eq!(up["redis"], "up", "{up}");
        assert_eq!(up["redis_subscription"], "subscribed", "{up}");
    })
    .await;
    eprintln!(
        "redis restart: {acked} messages acked and delivered across nodes in {:?}",
        started.elapsed()
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_and_readiness_follows() {
    let test = "a_postgres_restart_under_load_loses_nothing_and_readiness_follows";
    // Runs where the shared Postgres is configured (CI), on a server of its own.
    let (true, Some(redis)) = (postgres_configured(test), test_redis_url(test)) else {
        return;
    };
    // A server of the test's own, so that it can be stopped and started again.
    let pg = PrivatePostgres::start().await;
    let channel = channel();
    let a = Node::start(&pg.url(), Some((&redis, &channel))).await;
    let b = Node::start(&pg.url(), Some((&redis, &channel))).await;
    let contact = a.banner.contact.clone();
    let sender = a.agent().await;
    let mut agent = b.listening_agent(false).await;

    let started = Instant::now();
    let acked = light_load_through(&sender, &mut agent, &contact, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg.stop().await;
        let down = a
            .wait_ready(false, "not ready while Postgres is down")
            .await;
        assert_eq!(down["store"], "down", "{down}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        pg.start_again().await;
        for node in [&a, &b] {
            let up = node.wait_ready(true, "ready once Postgres is back").await;
            assert_eq!(up["change_feed"], "listening", "{up}");
        }
    })
    .await;
    eprintln!(
        "postgres restart: {acked} messages acked and delivered across nodes in {:?}",
        started.elapsed()
    );
}

fn postgres_configured(test: &str) -> bool {
    let set = std::env::var_os(ScratchDatabase::ENV).is_some();
    if !set {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test}: {} is not set",
            ScratchDatabase::ENV
        );
    }
    set
}

/// `psql` with `sql` against `url`.
async fn psql(url: &str, sql: &str) {
    let out = tokio::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .await
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_with_psql_reach_clients_even_after_a_feed_outage() {
    let test = "rows_inserted_with_psql_reach_clients_even_after_a_feed_outage";
    let Some(db) = ScratchDatabase::create(test).await else {
        return;
    };
    // The node reaches Postgres through a gate the test can cut; psql goes direct.
    let direct: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let gate = Gate::to(direct).await;
    let through_gate = db.url.replace("127.0.0.1:5432", &gate.addr.to_string());
    assert_ne!(
        through_gate, db.url,
        "the test database is expected on 127.0.0.1:5432"
    );
    let node = Node::start(&through_gate, None).await;
    let mut agent = node.listening_agent(false).await;
    let (workspace, contact) = (&node.banner.workspace, &node.banner.contact);
    let base = last_seq(&node.agent().await, workspace).await;

    psql(
        &db.url,
        &format!(
            "INSERT INTO livechat_messages (contact_id, workspace_id, body, direction) \
             VALUES ('{contact}', '{workspace}', 'written with psql', 'inbound')"
        ),
    )
    .await;
    let m = agent.next("new_message").await;
    assert_eq!(m["body"], "written with psql");
    assert_eq!(m["seq"], base + 1);

    gate.cut();
    let down = node
        .wait_ready(false, "not ready while Postgres is unreachable")
        .await;
    assert_eq!(down["change_feed"], "down", "{down}");
    psql(
        &db.url,
        &format!(
            "INSERT INTO livechat_messages (contact_id, workspace_id, body, direction) \
             SELECT '{contact}', '{workspace}', 'burst ' || i, 'inbound' \
             FROM generate_series(1, 25) AS i"
        ),
    )
    .await;
    assert!(
        agent
            .take("new_message", 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "nothing can arrive while the node cannot reach Postgres"
    );
    gate.restore();
    node.wait_ready(true, "ready once Postgres is reachable")
        .await;
    let burst = agent.take("new_message", 25, Duration::from_secs(10)).await;
    assert_eq!(
        seqs(&burst),
        (base + 2..=base + 26).collect::<Vec<_>>(),
        "the burst written during the outage, caught up once and in order"
    );
    db.drop_database().await;
}
