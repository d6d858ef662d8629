//! The pipeline through the handle, with store doubles: group commit, backpressure,
//! and failures that must reach the caller as the right code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use livechat_core::auth::JwtAuthenticator;
use livechat_core::error::StoreError;
use livechat_core::model::{
    Contact, ContactId, Direction, NewMessage, Page, Role, UserId, Workspace, WorkspaceId,
};
use livechat_core::store::{
    Appended, Directory, MemoryStore, MessageStore, NewContact, NewWorkspace, SyncScope,
};
use livechat_core::testing::workspace_with_contact;
use livechat_core::{ErrorCode, Limits, LiveChat, Publish};

/// A MemoryStore whose commits take `delay`, and fail while `failing` is set.
#[derive(Clone)]
struct SlowStore {
    inner: Arc<MemoryStore>,
    delay: Duration,
    failing: Arc<AtomicBool>,
}

impl SlowStore {
    fn new(delay: Duration) -> Self {
        Self {
            inner: Arc::new(MemoryStore::new()),
            delay,
            failing: Arc::default(),
        }
    }
}

impl MessageStore for SlowStore {
    async fn append(&self, m: NewMessage) -> Result<Appended, StoreError> {
        self.append_batch(vec![m]).await.pop().unwrap()
    }
    async fn append_batch(&self, m: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        tokio::time::sleep(self.delay).await;
        if self.failing.load(Ordering::SeqCst) {
            return m
                .iter()
                .map(|_| Err(StoreError::Unavailable("injected".into())))
                .collect();
        }
        self.inner.append_batch(m).await
    }
    async fn history(
        &self,
        c: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        self.inner.history(c, before, limit).await
    }
    async fn sync(&self, s: SyncScope, after: i64, limit: u32) -> Result<Page, StoreError> {
        self.inner.sync(s, after, limit).await
    }
    async fn mark_read(&self, c: ContactId, up_to: i64) -> Result<u64, StoreError> {
        self.inner.mark_read(c, up_to).await
    }
}

impl Directory for SlowStore {
    async fn create_workspace(&self, w: NewWorkspace) -> Result<Workspace, StoreError> {
        self.inner.create_workspace(w).await
    }
    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        self.inner.workspace(id).await
    }
    async fn create_contact(&self, c: NewContact) -> Result<Contact, StoreError> {
        self.inner.create_contact(c).await
    }
    async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        self.inner.contact(id).await
    }
    async fn add_member(&self, w: WorkspaceId, u: UserId, r: Role) -> Result<(), StoreError> {
        self.inner.add_member(w, u, r).await
    }
    async fn remove_member(&self, w: WorkspaceId, u: &UserId) -> Result<bool, StoreError> {
        self.inner.remove_member(w, u).await
    }
    async fn member_role(&self, w: WorkspaceId, u: &UserId) -> Result<Option<Role>, StoreError> {
        self.inner.member_role(w, u).await
    }
}

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
