//! Graceful drain, for a host that shuts down: take no new connections or sends,
//! answer every request already taken, tell each client to reconnect, then close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::chat::LiveChat;
use crate::protocol::{Draining, events};

/// Time given to clients to fetch the drain notice and their last answers before
/// their connections close.
const FLUSH: Duration = Duration::from_millis(500);

/// Whether the node drains, and how many socket requests are still unanswered.
#[derive(Debug, Default)]
pub(crate) struct DrainState {
    draining: AtomicBool,
    unanswered: AtomicUsize,
    answered_all: Notify,
}

/// A socket request taken and not answered yet: a drain waits for it. Dropped once
/// the answer (for a send: the ack after its commit) is handed to the socket.
#[derive(Debug)]
pub(crate) struct Unanswered(Arc<DrainState>);

impl DrainState {
    pub(crate) fn take(self: &Arc<Self>) -> Unanswered {
        self.unanswered.fetch_add(1, Ordering::SeqCst);
        Unanswered(self.clone())
    }

    /// Sequentially consistent with [`take`](Self::take) and the drain's count: a
    /// request counted before the drain looked is waited for, and one counted after
    /// sees the drain.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.0.unanswered.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.answered_all.notify_waiters();
        }
    }
}

/// What a drain did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Sockets told `livechat:draining`.
    pub told: usize,
    /// Socket requests still unanswered when the bound ran out (0 when every one
    /// was answered).
    pub unanswered: usize,
    /// How long the drain took.
    pub took: Duration,
}

impl LiveChat {
    /// Whether [`drain`](Self::drain) has begun.
    pub fn draining(&self) -> bool {
        self.inner().drain.draining()
    }

    /// Drains this node for a shutdown, within `bound`:
    ///
    /// 1. new Engine.IO sessions get `503` with `Retry-After`, namespace connects
    ///    `connect_error` `unavailable: …` (which socket.io-client does not retry by
    ///    itself), and `send_message`s that arrive from now on are answered
    ///    `unavailable` (`ChatError::ShuttingDown`) — the client sends them again,
    ///    with the same `clientId`, once reconnected;
    /// 2. every socket is sent `livechat:draining` (`{ reconnect: true,
    ///    closing_within_ms }`);
    /// 3. requests taken before the drain began are answered: sends are committed
    ///    and acked (requests other than sends that arrive during the drain are
    ///    served, but not waited for);
    /// 4. half a second (at most a quarter of the bound) lets long-polling clients
    ///    fetch what is queued for them;
    /// 5. every connection is closed at the transport, so that socket.io-client
    ///    reconnects by itself (to another node behind a load balancer), and catches
    ///    up with `after`.
    ///
    /// Call it before the host stops its listener; REST sends through
    /// [`publish`](Self::publish) or [`send_message`](Self::send_message) still work
    /// while it runs.
    pub async fn drain(&self, bound: Duration) -> DrainReport {
        let started = Instant::now();
        let deadline = started + bound;
        let state = &self.inner().drain;
        state.draining.store(true, Ordering::SeqCst);
        let notice = Draining {
            reconnect: true,
            closing_within_ms: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
        };
        let mut told = 0;
        for s in self.inner().io.sockets() {
            match s.emit(events::DRAINING, &notice) {
                Ok(()) => told += 1,
                Err(e) => {
                    tracing::debug!(sid = %s.id, error = %e, "could not tell a socket of the drain")
                }
            }
        }
        loop {
            let answered_all = state.answered_all.notified();
            tokio::pin!(answered_all);
            answered_all.as_mut().enable();
            if state.unanswered.load(Ordering::SeqCst) == 0
                || tokio::time::timeout_at(deadline, answered_all)
                    .await
                    .is_err()
            {
                break;
            }
        }
        let unanswered = state.unanswered.load(Ordering::SeqCst);
        // Closing a session drops what is still queued for it. A websocket writes the
        // notice and the last acks at once; a long-polling client fetches them with its
        // next poll, which it sends as soon as the previous one is answered.
        if told > 0 {
            let flushed = (Instant::now() + FLUSH.min(bound / 4)).min(deadline);
            tokio::time::sleep_until(flushed).await;
        }
        // Closing waits for each transport to end; a peer that does not answer must
        // not hold the shutdown past its bound (a moment is left for a bound of 0).
        let closing = deadline.max(Instant::now() + Duration::from_millis(100));
        if tokio::time::timeout_at(closing, self.close())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the drain's bound");
        }
        DrainReport {
            told,
            unanswered,
            took: started.elapsed(),
        }
    }
}
