//! The Postgres change feed: `LISTEN` on the channels the store's triggers notify.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use tokio::task::JoinHandle;

use crate::LiveChat;
use crate::model::{UserId, WorkspaceId};

/// The channel the insert trigger notifies: `{"workspace_id", "seq"}`.
const MESSAGES: &str = "livechat_messages";
/// The channel the membership trigger notifies: `{"workspace_id", "user_id"}`.
const MEMBERS: &str = "livechat_members";

#[derive(Deserialize)]
struct Committed {
    workspace_id: WorkspaceId,
    seq: i64,
}

#[derive(Deserialize)]
struct MemberRemoved {
    workspace_id: WorkspaceId,
    user_id: UserId,
}

/// Listens to the Postgres store's change notifications and delivers what they
/// announce: messages that other nodes or other programs inserted, and removed members.
///
/// The listener reconnects by itself, and after every (re)connect it reads what was
/// committed while it was not listening, so nothing is missed; what it already
/// delivered is not delivered again. Dropping the feed stops it.
#[derive(Debug)]
pub struct ChangeFeed {
    state: Arc<FeedState>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct FeedState {
    listening: AtomicBool,
    connects: AtomicU64,
}

impl ChangeFeed {
    /// Starts listening on a connection of `pool` (held outside the pool's count).
    pub fn start(pool: PgPool, chat: LiveChat) -> Self {
        let state = Arc::new(FeedState::default());
        let task = tokio::spawn(listen(pool, chat, state.clone()));
        Self { state, task }
    }

    /// Whether the listener is connected now; for readiness probes.
    pub fn is_listening(&self) -> bool {
        self.state.listening.load(Ordering::Relaxed)
    }

    /// How many times the listener has connected (1 without any outage).
    pub fn connects(&self) -> u64 {
        self.state.connects.load(Ordering::Relaxed)
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(pool: PgPool, chat: LiveChat, state: Arc<FeedState>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "change feed: cannot listen");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let connects = state.connects.fetch_add(1, Ordering::Relaxed) + 1;
        state.listening.store(true, Ordering::Relaxed);
        if connects > 1 {
            tracing::info!("change feed: listening again, catching up");
        }
        // Anything committed before LISTEN took effect is read here; anything after
        // comes as a notification. Both roads meet in the writer, which drops repeats.
        chat.catch_up().await;
        loop {
            match listener.try_recv().await {
                Ok(Some(first)) => {
                    // Whatever else has arrived goes with it: a busy node hears of every
                    // row it commits, and one step per workspace is enough.
                    let mut batch = vec![first];
                    while batch.len() < MAX_DRAIN
                        && let Some(next) = listener.next_buffered()
                    {
                        batch.push(next);
                    }
                    handle(&chat, &batch).await;
                }
                Ok(None) => {
                    tracing::warn!("change feed: connection lost");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: connection failed");
                    break;
                }
            }
        }
        state.listening.store(false, Ordering::Relaxed);
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([MESSAGES, MEMBERS]).await?;
    Ok(listener)
}

/// Most notifications handled together.
const MAX_DRAIN: usize = 4096;

/// Announces the highest seq of each workspace in `batch` (the writer reads anything
/// before it that it has not delivered), then applies the membership removals.
async fn handle(chat: &LiveChat, batch: &[PgNotification]) {
    let mut latest: HashMap<WorkspaceId, i64> = HashMap::new();
    for notification in batch.iter().filter(|n| n.channel() == MESSAGES) {
        match serde_json::from_str::<Committed>(notification.payload()) {
            Ok(c) => {
                let seq = latest.entry(c.workspace_id).or_insert(c.seq);
                *seq = (*seq).max(c.seq);
            }
            Err(e) => tracing::warn!(error = %e, "change feed: unreadable message notification"),
        }
    }
    for (workspace, seq) in latest {
        chat.announced(workspace, seq).await;
    }
    for notification in batch.iter().filter(|n| n.channel() != MESSAGES) {
        handle_other(chat, notification).await;
    }
}

async fn handle_other(chat: &LiveChat, notification: &PgNotification) {
    let payload = notification.payload();
    match notification.channel() {
        MEMBERS => match serde_json::from_str::<MemberRemoved>(payload) {
            Ok(m) => {
                if let Err(e) = chat
                    .member_removed_elsewhere(m.workspace_id, &m.user_id)
                    .await
                {
                    tracing::warn!(error = %e, "change feed: could not evict a removed member");
                }
            }
            Err(e) => tracing::warn!(error = %e, "change feed: unreadable member notification"),
        },
        other => tracing::debug!(channel = other, "change feed: unexpected channel"),
    }
}
