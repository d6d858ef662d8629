//! The whole pipeline in one process, through the in-memory store: `send_message` over
//! a websocket, through the layer (decode, checks, dedup key, commit queue, store),
//! to `new_message` on every subscriber's websocket. One message at a time, each
//! timed from the send until its ack and all its deliveries have arrived.
//!
//! Run: `cargo bench -p livechat-benches --bench pipeline`

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use livechat_core::auth::{Claims, JwtAuthenticator};
use livechat_core::model::{ContactId, Role, UserId};
use livechat_core::store::MemoryStore;
use livechat_core::testing::workspace_with_contact;
use livechat_core::{Limits, LiveChat, Rate};
use livechat_loadgen::Client;
use serde_json::json;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as Frame;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench!";
/// How long one message may take to reach every subscriber before the bench fails.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);

fn token(user: &str) -> String {
    Claims::new(user, chrono::Duration::hours(1))
        .sign_hs256(SECRET)
        .expect("token")
}

/// A server on 127.0.0.1:0 with one workspace, one contact, a sender and
/// `subscribers` sockets in the workspace room, each counting its deliveries.
struct Setup {
    sender: Client,
    contact: ContactId,
    subscribers: u64,
    delivered: Arc<AtomicU64>,
    /// Signalled when a message has reached every subscriber.
    complete: Arc<Notify>,
    /// Subscribers whose connection ended (counted, so that a failure can say so).
    gone: Arc<AtomicU64>,
}

async fn setup(subscribers: u64) -> anyhow::Result<Setup> {
    // The send budgets are per user and per workspace: the bench sends far faster
    // than any agent.
    let mut limits = Limits::default();
    let unlimited = Rate::new(u32::MAX, u32::MAX);
    limits.send_per_user = unlimited;
    limits.send_per_socket = unlimited;
    limits.send_per_workspace = unlimited;
    // The subscribers are one agent's sockets: agents that each joined would each send
    // every other subscriber a presence change, a storm that is not the pipeline.
    limits.max_connections_per_user = subscribers as usize;
    let store = MemoryStore::new();
    let (workspace, contact) = workspace_with_contact(&store).await;
    let (layer, chat) = LiveChat::builder()
        .store(store)
        .authenticator(JwtAuthenticator::hs256(SECRET))
        .limits(limits)
        .build_layer();
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    chat.add_member(workspace, UserId::from("sender"), Role::Agent)
        .await?;
    chat.add_member(workspace, UserId::from("agent"), Role::Agent)
        .await?;
    let agent = token("agent");

    let delivered = Arc::new(AtomicU64::new(0));
    let complete = Arc::new(Notify::new());
    let gone = Arc::new(AtomicU64::new(0));
    for _ in 0..subscribers {
        let mut client = Client::connect(&url, &agent).await?;
        client
            .emit_ack(1, "join_workspace", json!({ "workspaceId": workspace }))
            .await?;
        client.wait_acks(&[1]).await?;
        let (delivered, complete, gone) = (delivered.clone(), complete.clone(), gone.clone());
        tokio::spawn(async move {
            let (mut sink, mut stream) = client.ws.split();
            while let Some(Ok(frame)) = stream.next().await {
                let Frame::Text(text) = frame else {
                    continue;
                };
                if text.as_str() == "2" {
                    if sink.send(Frame::text("3")).await.is_err() {
                        break;
                    }
                } else if text.as_str().starts_with("42[\"new_message\",") {
                    // Each message reaches every subscriber once, one message at a time:
                    // the count is a multiple of `subscribers` exactly when it is done.
                    let count = delivered.fetch_add(1, Ordering::Relaxed) + 1;
                    if count.is_multiple_of(subscribers) {
                        complete.notify_one();
                    }
                }
            }
            gone.fetch_add(1, Ordering::Relaxed);
        });
    }
    let sender = Client::connect(&url, &token("sender")).await?;
    Ok(Setup {
        sender,
        contact,
        subscribers,
        delivered,
        complete,
        gone,
    })
}

impl Setup {
    /// Sends `count` messages one after the other, each waiting for its ack and its
    /// deliveries; returns the time it took.
    async fn send(&mut self, count: u64, next_id: &mut u64) -> Duration {
        let before = self.delivered.load(Ordering::Relaxed);
        let start = Instant::now();
        for sent in 0..count {
            let id = *next_id;
            *next_id += 1;
            self.sender
                .emit_ack(
                    id,
                    "send_message",
                    json!({
                        "contactId": self.contact,
                        "body": "Hello, I have a question about my order #1234",
                        "clientId": format!("bench-{id}"),
                    }),
                )
                .await
                .expect("send");
            self.sender.wait_acks(&[id]).await.expect("the send's ack");
            if tokio::time::timeout(DELIVERY_WAIT, self.complete.notified())
                .await
                .is_err()
            {
                let reached =
                    || self.delivered.load(Ordering::Relaxed) - before - sent * self.subscribers;
                let in_time = reached();
                // Only to tell late deliveries from lost ones in the message.
                tokio::time::sleep(DELIVERY_WAIT).await;
                panic!(
                    "message {id} reached {in_time} of {} subscribers within {DELIVERY_WAIT:?}, \
                     {} after {:?} more; {} subscriber connections had ended",
                    self.subscribers,
                    reached(),
                    DELIVERY_WAIT,
                    self.gone.load(Ordering::Relaxed)
                );
            }
        }
        let elapsed = start.elapsed();
        let delivered = self.delivered.load(Ordering::Relaxed) - before;
        assert_eq!(
            delivered,
            count * self.subscribers,
            "every message reaches every subscriber once"
        );
        elapsed
    }
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(20);
    for subscribers in [1u64, 100, 1000] {
        let mut setup = rt
            .block_on(setup(subscribers))
            .unwrap_or_else(|e| panic!("setting up {subscribers} subscribers: {e:#}"));
        let mut next_id = 10;
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(
            BenchmarkId::new("send_to_memory_store", format!("{subscribers}_subscribers")),
            |b| b.iter_custom(|iters| rt.block_on(setup.send(iters, &mut next_id))),
        );
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
