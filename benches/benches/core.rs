//! Criterion benchmarks, groups named `area/case`.
//!
//! Run: `cargo bench -p livechat-benches`

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use livechat_core::model::{ContactId, WorkspaceId};
use livechat_core::protocol::{SendMessage, decode_request};
use livechat_core::store::{MemoryStore, MessageStore, PostgresStore, SqliteStore};
use livechat_core::testing::{ScratchDatabase, new_message, workspace_with_contact};

fn protocol(c: &mut Criterion) {
    let payload = serde_json::json!({
        "contactId": ContactId::new_v4(),
        "body": "Hello, I have a question about my order #1234",
        "clientId": "c-0001",
    });
    c.bench_function("protocol/decode_send_message", |b| {
        b.iter(|| decode_request::<SendMessage>(payload.clone(), 32).unwrap())
    });
    let message = new_message(
        WorkspaceId::new_v4(),
        ContactId::new_v4(),
        "Hello there",
        Some("k"),
    )
    .into_message(1);
    c.bench_function("protocol/encode_message", |b| {
        b.iter(|| serde_json::to_vec(&message).unwrap())
    });

    // What one broadcast to 1000 sockets costs in JSON: the message serialized per
    // socket (as `emit(&message)` does), or once and copied (what delivery does).
    let mut group = c.benchmark_group("broadcast");
    group.bench_function("encode_per_socket/1000", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                std::hint::black_box(serde_json::to_vec(&("new_message", &message)).unwrap());
            }
        })
    });
    group.bench_function("encode_once/1000", |b| {
        b.iter(|| {
            let raw = serde_json::value::to_raw_value(&message).unwrap();
            for _ in 0..1000 {
                std::hint::black_box(serde_json::to_vec(&("new_message", &raw)).unwrap());
            }
        })
    });
    group.finish();
}

/// The send budget's hot path: one keyed check per `send_message` (governor, as the
/// guard configures it), for a user that is within its budget.
fn rate_limit(c: &mut Criterion) {
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000).unwrap());
    let by_user = RateLimiter::keyed(quota);
    let users: Vec<String> = (0..1000).map(|i| format!("agent-{i}")).collect();
    let mut i = 0;
    c.bench_function("rate_limit/keyed_check_1000_users", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            by_user.check_key(&users[i]).is_ok()
        })
    });
}

fn store_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("store");

    let memory = MemoryStore::new();
    let (ws, contact) = rt.block_on(workspace_with_contact(&memory));
    group.bench_function(BenchmarkId::new("append", "memory"), |b| {
        b.to_async(&rt)
            .iter(|| memory.append(new_message(ws, contact, "bench", None)))
    });
    // Dedup: a retry of a stored clientId is answered from the unique key.
    rt.block_on(memory.append(new_message(ws, contact, "bench", Some("retry"))))
        .unwrap();
    group.bench_function(BenchmarkId::new("append_duplicate", "memory"), |b| {
        b.to_async(&rt)
            .iter(|| memory.append(new_message(ws, contact, "bench", Some("retry"))))
    });

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = rt.block_on(SqliteStore::open(&url)).unwrap();
    let (ws, contact) = rt.block_on(workspace_with_contact(&sqlite));
    group.bench_function(BenchmarkId::new("append", "sqlite_full_sync"), |b| {
        b.to_async(&rt)
            .iter(|| sqlite.append(new_message(ws, contact, "bench", None)))
    });
    group.bench_function(
        BenchmarkId::new("append_batch_64", "sqlite_full_sync"),
        |b| {
            b.to_async(&rt).iter(|| {
                sqlite.append_batch(
                    (0..64)
                        .map(|_| new_message(ws, contact, "bench", Some(&fresh_key())))
                        .collect(),
                )
            })
        },
    );
    rt.block_on(sqlite.append(new_message(ws, contact, "bench", Some("retry"))))
        .unwrap();
    group.bench_function(
        BenchmarkId::new("append_duplicate", "sqlite_full_sync"),
        |b| {
            b.to_async(&rt)
                .iter(|| sqlite.append(new_message(ws, contact, "bench", Some("retry"))))
        },
    );

    // Postgres, where LIVECHAT_TEST_POSTGRES_URL names a server.
    if let Some(db) = rt.block_on(ScratchDatabase::create("store/append on postgres")) {
        let pg = rt.block_on(PostgresStore::open(&db.url)).unwrap();
        let (ws, contact) = rt.block_on(workspace_with_contact(&pg));
        group.bench_function(BenchmarkId::new("append", "postgres"), |b| {
            b.to_async(&rt)
                .iter(|| pg.append(new_message(ws, contact, "bench", None)))
        });
        group.bench_function(BenchmarkId::new("append_batch_64", "postgres"), |b| {
            b.to_async(&rt).iter(|| {
                pg.append_batch(
                    (0..64)
                        .map(|_| new_message(ws, contact, "bench", Some(&fresh_key())))
                        .collect(),
                )
            })
        });
        rt.block_on(async {
            pg.close().await;
            db.drop_database().await;
        });
    }
    group.finish();
}

/// A new idempotency key, as every client send carries one.
fn fresh_key() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "k{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

criterion_group!(benches, protocol, rate_limit, store_append);
criterion_main!(benches);
