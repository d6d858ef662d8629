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
use livechat_core::store::{MemoryStore, MessageStore, SqliteStore};
use livechat_core::testing::{new_message, workspace_with_contact};

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
                        .map(|_| new_message(ws, contact, "bench", None))
                        .collect(),
                )
            })
        },
    );
    group.finish();
}

criterion_group!(benches, protocol, store_append);
criterion_main!(benches);
