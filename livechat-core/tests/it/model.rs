//! Model-based tests: random interleavings of operations against a reference model
//! that is too simple to be wrong. Every store, and the live socket path, must give
//! the model's answers.

use std::time::Duration;

use livechat_core::model::ContactId;
use livechat_core::store::{Appended, MemoryStore, NewContact, SqliteStore, Store, SyncScope};
use livechat_core::testing::{new_message, workspace_with_contact};
use proptest::prelude::*;
use serde_json::json;

use crate::harness::{Server, TestClient};

#[derive(Clone, Debug)]
enum Op {
    /// Send to contact `c`, with idempotency key `k` (a small range, so retries of
    /// old keys are frequent).
    Send {
        c: usize,
        k: Option<u8>,
    },
    /// Several sends in one commit.
    Batch(Vec<(usize, Option<u8>)>),
    Sync {
        c: Option<usize>,
        after: i64,
        limit: u32,
    },
    History {
        c: usize,
        before: Option<i64>,
        limit: u32,
    },
    MarkRead {
        c: usize,
        up_to: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let send = (0..3usize, proptest::option::of(0..6u8));
    prop_oneof![
        4 => send.clone().prop_map(|(c, k)| Op::Send { c, k }),
        1 => proptest::collection::vec(send, 1..6).prop_map(Op::Batch),
        2 => (proptest::option::of(0..3usize), 0..25i64, 1..8u32)
            .prop_map(|(c, after, limit)| Op::Sync { c, after, limit }),
        2 => (0..3usize, proptest::option::of(0..25i64), 1..8u32)
            .prop_map(|(c, before, limit)| Op::History { c, before, limit }),
        1 => (0..3usize, 0..25i64).prop_map(|(c, up_to)| Op::MarkRead { c, up_to }),
    ]
}

/// The reference: a list in seq order.
#[derive(Default)]
struct Model {
    messages: Vec<(usize, Option<u8>, bool)>, // contact, key, read; seq = index + 1
}

impl Model {
    /// Returns the seq and whether it is new.
    fn send(&mut self, c: usize, k: Option<u8>) -> (i64, bool) {
        if let Some(k) = k
            && let Some(i) = self.messages.iter().position(|m| m.1 == Some(k))
        {
            return (i as i64 + 1, false);
        }
        self.messages.push((c, k, false));
        (self.messages.len() as i64, true)
    }

    fn seqs(&self, filter: impl Fn(i64, &(usize, Option<u8>, bool)) -> bool) -> Vec<i64> {
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| (i as i64 + 1, m))
            .filter(|(seq, m)| filter(*seq, m))
            .map(|(seq, _)| seq)
            .collect()
    }
}

async fn check_store<S: Store>(store: S, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (ws, c0) = workspace_with_contact(&store).await;
    let mut contacts = vec![c0];
    for _ in 0..2 {
        let id = ContactId::new_v4();
        store
            .create_contact(NewContact {
                id,
                workspace_id: ws,
                name: "x".into(),
                phone: None,
            })
            .await
            .unwrap();
        contacts.push(id);
    }
    let mut model = Model::default();
    let key = |k: Option<u8>| k.map(|k| format!("key-{k}"));
    for op in ops {
        match op {
            Op::Send { c, k } => {
                let got = store
                    .append(new_message(ws, contacts[c], "m", key(k).as_deref()))
                    .await
                    .unwrap();
                let (seq, new) = model.send(c, k);
                prop_assert_eq!(got.message().seq, seq);
                prop_assert_eq!(matches!(got, Appended::Inserted(_)), new);
            }
            Op::Batch(sends) => {
                let batch = sends
                    .iter()
                    .map(|&(c, k)| new_message(ws, contacts[c], "b", key(k).as_deref()))
                    .collect();
                let got = store.append_batch(batch).await;
                for (r, &(c, k)) in got.iter().zip(&sends) {
                    let (seq, new) = model.send(c, k);
                    let r = r.as_ref().unwrap();
                    prop_assert_eq!(r.message().seq, seq);
                    prop_assert_eq!(matches!(r, Appended::Inserted(_)), new);
                }
            }
            Op::Sync { c, after, limit } => {
                let scope = c.map_or(SyncScope::Workspace(ws), |c| {
                    SyncScope::Contact(contacts[c])
                });
                let page = store.sync(scope, after, limit).await.unwrap();
                let all = model.seqs(|seq, m| seq > after && c.is_none_or(|c| m.0 == c));
                let want: Vec<i64> = all.iter().copied().take(limit as usize).collect();
                prop_assert_eq!(
                    page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                    want
                );
                prop_assert_eq!(page.has_more, all.len() > limit as usize);
            }
            Op::History { c, before, limit } => {
                let page = store.history(contacts[c], before, limit).await.unwrap();
                let mut all = model.seqs(|seq, m| m.0 == c && before.is_none_or(|b| seq < b));
                all.reverse();
                let want: Vec<i64> = all.iter().copied().take(limit as usize).collect();
                prop_assert_eq!(
                    page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                    want
                );
                prop_assert_eq!(page.has_more, all.len() > limit as usize);
            }
            Op::MarkRead { c, up_to } => {
                let changed = store.mark_read(contacts[c], up_to).await.unwrap();
                let mut want = 0;
                for (i, m) in model.messages.iter_mut().enumerate() {
                    if m.0 == c && (i as i64) < up_to && !m.2 {
                        m.2 = true;
                        want += 1;
                    }
                }
                prop_assert_eq!(changed, want);
            }
        }
    }
    // Finally the whole workspace, read flags included.
    let page = store.sync(SyncScope::Workspace(ws), 0, 200).await.unwrap();
    let read: Vec<bool> = page.messages.iter().map(|m| m.is_read).collect();
    prop_assert_eq!(read, model.messages.iter().map(|m| m.2).collect::<Vec<_>>());
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn memory_store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        runtime().block_on(check_store(MemoryStore::new(), ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn sqlite_store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("model.db").display());
            let store = SqliteStore::open(&url).await.unwrap();
            let result = check_store(store.clone(), ops).await;
            store.close().await;
            result
        })?;
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_store_matches_the_model() {
    use livechat_core::store::PostgresStore;
    use livechat_core::testing::ScratchDatabase;
    let rt = runtime();
    let Some(db) = rt.block_on(ScratchDatabase::create("postgres_store_matches_the_model")) else {
        return;
    };
    // One database for every case: each case works in a workspace of its own.
    let store = rt.block_on(PostgresStore::open(&db.url)).unwrap();
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let outcome = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        rt.block_on(check_store(store.clone(), ops))
    });
    rt.block_on(async {
        store.close().await;
        db.drop_database().await;
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// What agents do over sockets.
#[derive(Clone, Debug)]
enum Live {
    /// The sender sends, with a key from a small range (old keys are retries).
    Send(Option<u8>),
    /// Agent `a` drops its connection.
    Disconnect(usize),
    /// Agent `a` comes back and joins with the last seq it saw.
    Reconnect(usize),
    /// Agent `a` asks `sync` from its last seq: it must be exactly the model's tail.
    Sync(usize),
}

fn live_op() -> impl Strategy<Value = Live> {
    prop_oneof![
        5 => proptest::option::of(0..8u8).prop_map(Live::Send),
        1 => (0..2usize).prop_map(Live::Disconnect),
        1 => (0..2usize).prop_map(Live::Reconnect),
        1 => (0..2usize).prop_map(Live::Sync),
    ]
}

struct Agent {
    client: Option<TestClient>,
    seen: Vec<i64>,
}

impl Agent {
    async fn drain(&mut self) {
        if let Some(c) = &mut self.client {
            for m in c.collect("new_message", Duration::from_millis(30)).await {
                self.seen.push(m["seq"].as_i64().unwrap());
            }
        }
    }

    fn last(&self) -> i64 {
        self.seen.last().copied().unwrap_or(0)
    }
}

async fn check_live(store: impl Store, ops: Vec<Live>) -> Result<(), TestCaseError> {
    let server = Server::start_with(store, livechat_core::Limits::default()).await;
    let sender = server.connect("alice").await;
    let mut agents = Vec::new();
    for _ in 0..2 {
        let c = server.connect("alice").await;
        c.call_ok("join_workspace", json!({ "workspaceId": server.ws }))
            .await;
        agents.push(Agent {
            client: Some(c),
            seen: Vec::new(),
        });
    }
    let mut model = Model::default();
    for op in ops {
        match op {
            Live::Send(k) => {
                let mut payload = json!({ "contactId": server.contact, "body": "p" });
                if let Some(k) = k {
                    payload["clientId"] = json!(format!("key-{k}"));
                }
                let got = sender.call_ok("send_message", payload).await;
                let (seq, _) = model.send(0, k);
                prop_assert_eq!(
                    got["seq"].as_i64(),
                    Some(seq),
                    "a retry returns the original"
                );
            }
            Live::Disconnect(a) => {
                agents[a].drain().await;
                if let Some(c) = agents[a].client.take() {
                    c.close().await;
                }
            }
            Live::Reconnect(a) => {
                if agents[a].client.is_none() {
                    let c = server.connect("alice").await;
                    let after = agents[a].last();
                    let joined = c
                        .call_ok(
                            "join_workspace",
                            json!({ "workspaceId": server.ws, "after": after }),
                        )
                        .await;
                    prop_assert_eq!(&joined["complete"], &json!(true));
                    agents[a].client = Some(c);
                }
            }
            Live::Sync(a) => {
                agents[a].drain().await;
                if let Some(c) = &agents[a].client {
                    let after = agents[a].last();
                    let page = c
                        .call_ok("sync", json!({ "workspaceId": server.ws, "after": after }))
                        .await;
                    let got: Vec<i64> = page["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["seq"].as_i64().unwrap())
                        .collect();
                    // Whatever is newer than what it saw: only messages still in flight to it.
                    let tail = model.seqs(|seq, _| seq > after);
                    prop_assert_eq!(got, tail);
                }
            }
        }
    }
    // Everyone comes back; then each agent has seen every message exactly once, in order.
    let everything = model.seqs(|_, _| true);
    for (a, agent) in agents.iter_mut().enumerate() {
        if agent.client.is_none() {
            let c = server.connect("alice").await;
            let after = agent.last();
            c.call_ok(
                "join_workspace",
                json!({ "workspaceId": server.ws, "after": after }),
            )
            .await;
            agent.client = Some(c);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while agent.seen.len() < everything.len() && tokio::time::Instant::now() < deadline {
            agent.drain().await;
        }
        agent.drain().await;
        prop_assert_eq!(&agent.seen, &everything, "agent {}", a);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn live_delivery_with_drops_and_retries_matches_the_model(ops in proptest::collection::vec(live_op(), 1..30)) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
            .block_on(check_live(MemoryStore::new(), ops))?;
    }
}

#[test]
fn live_delivery_on_sqlite_matches_the_model() {
    // The embedded default store, with its real commits: one database file for every
    // case, each case in a workspace of its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("live.db").display());
    let store = rt.block_on(SqliteStore::open(&url)).unwrap();
    let config = ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let outcome = runner.run(&proptest::collection::vec(live_op(), 1..30), |ops| {
        rt.block_on(check_live(store.clone(), ops))
    });
    rt.block_on(store.close());
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn live_delivery_on_postgres_matches_the_model() {
    use livechat_core::store::PostgresStore;
    use livechat_core::testing::ScratchDatabase;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(ScratchDatabase::create(
        "live_delivery_on_postgres_matches_the_model",
    )) else {
        return;
    };
    // Every case starts a server with a workspace of its own on the one database.
    let store = rt.block_on(PostgresStore::open(&db.url)).unwrap();
    let config = ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let outcome = runner.run(&proptest::collection::vec(live_op(), 1..30), |ops| {
        rt.block_on(check_live(store.clone(), ops))
    });
    rt.block_on(async {
        store.close().await;
        db.drop_database().await;
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
