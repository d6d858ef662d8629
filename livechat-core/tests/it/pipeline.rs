//! The pipeline through the handle, with store doubles: group commit, backpressure,
//! and failures that must reach the caller as the right code.

use std::sync::atomic::Ordering;
use std::time::Duration;

use livechat_core::auth::JwtAuthenticator;
use livechat_core::model::Direction;
use livechat_core::store::{MessageStore, SyncScope};
use livechat_core::testing::workspace_with_contact;
use livechat_core::{ErrorCode, Limits, LiveChat, Publish};

use crate::harness::SlowStore;

fn chat(store: SlowStore, limits: Limits) -> LiveChat {
    LiveChat::builder()
        .store(store)
        .authenticator(JwtAuthenticator::hs256(
            b"pipeline-secret-pipeline-secret!!",
        ))
        .limits(limits)
        .build_layer()
        .1
}

#[tokio::test]
async fn concurrent_sends_share_commits_and_keep_one_ack_each() {
    let store = SlowStore::new(Duration::from_millis(5));
    let (ws, contact) = workspace_with_contact(&*store.inner).await;
    let chat = chat(store.clone(), Limits::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let chat = chat.clone();
        tasks.spawn(async move {
            chat.publish(
                Publish::new(contact, Direction::Inbound, format!("g{i}"))
                    .client_id(format!("g{i}")),
            )
            .await
            .map(|m| (i, m))
        });
    }
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.push(r.unwrap().expect("every send is acknowledged"));
    }
    for (i, m) in &acked {
        assert_eq!(m.body, format!("g{i}"), "each ack carries its own message");
    }
    let stats = chat.stats();
    assert_eq!(stats.committed_messages, 200);
    assert!(
        stats.commit_batches < 100,
        "200 concurrent sends took {} commits: no batching",
        stats.commit_batches
    );
    let page = store
        .inner
        .sync(SyncScope::Workspace(ws), 0, 200)
        .await
        .unwrap();
    let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<_>>(),
        "every message stored once, seq without gaps"
    );
}

#[tokio::test]
async fn a_full_commit_queue_answers_unavailable_with_a_retry_hint_and_loses_nothing_acked() {
    let store = SlowStore::new(Duration::from_millis(100));
    let (ws, contact) = workspace_with_contact(&*store.inner).await;
    let mut limits = Limits::default();
    limits.commit_queue = 4;
    limits.commit_batch = 2;
    let chat = chat(store.clone(), limits);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let chat = chat.clone();
        tasks.spawn(async move {
            chat.publish(Publish::new(contact, Direction::Inbound, format!("q{i}")))
                .await
        });
    }
    let (mut ok, mut refused) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(m) => ok.push(m),
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
                let wire = e.to_wire();
                assert!(wire.retry_after_ms.is_some_and(|ms| ms > 0), "{wire:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a queue of 4 took 40 concurrent sends");
    assert!(!ok.is_empty());
    let stored = store
        .inner
        .sync(SyncScope::Workspace(ws), 0, 200)
        .await
        .unwrap()
        .messages;
    assert_eq!(
        stored.len(),
        ok.len(),
        "exactly the acknowledged messages are stored"
    );
    for m in ok {
        assert!(stored.contains(&m), "acked message {} is stored", m.seq);
    }
}

#[tokio::test]
async fn a_failing_store_answers_unavailable_and_nothing_is_kept() {
    let store = SlowStore::new(Duration::ZERO);
    let (ws, contact) = workspace_with_contact(&*store.inner).await;
    store.failing.store(true, Ordering::SeqCst);
    let chat = chat(store.clone(), Limits::default());
    let e = chat
        .publish(Publish::new(contact, Direction::Inbound, "lost?"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(
        !e.client_message().contains("injected"),
        "the cause is not shown to clients"
    );
    assert!(
        store
            .inner
            .sync(SyncScope::Workspace(ws), 0, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    store.failing.store(false, Ordering::SeqCst);
    let m = chat
        .publish(Publish::new(contact, Direction::Inbound, "after"))
        .await
        .unwrap();
    assert_eq!(m.seq, 1, "the failed send left nothing behind");
}
