//! The Redis fan-out: every node publishes what it commits on one pub/sub channel and
//! delivers what the others publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Fanout, Signal};
use crate::LiveChat;
use crate::model::Message;
use crate::presence::PRESENCE_HEARTBEAT;

/// Why the Redis fan-out could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisFanoutError {
    /// The URL does not parse, or Redis refused the connection or the subscription.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// On the channel: a committed message or a signal, and the node it comes from.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<Signal>,
}

/// How many messages may wait to be published, and received ones to be delivered,
/// before more are dropped (and counted). The change feed and the writer's gap reads
/// make up for a drop; the bound keeps a Redis outage from growing memory.
const QUEUE: usize = 8192;

/// A [`Fanout`] over Redis pub/sub, on a connection that reconnects by itself and
/// subscribes again after every reconnect (a Redis restart must not silently end
/// cross-node delivery). After a resubscription it asks the livechat to catch up,
/// since what was published while it was away is gone from pub/sub.
///
/// Needs Redis 6 or later (RESP3). Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct RedisFanout {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: Uuid,
    channel: String,
    conn: ConnectionManager,
    outgoing: mpsc::Sender<Vec<u8>>,
    incoming: std::sync::Mutex<Option<mpsc::Receiver<PushInfo>>>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    resubscriptions: AtomicU64,
    disconnected: AtomicBool,
}

impl RedisFanout {
    /// Connects to `url` (`redis://host:port/db`) and subscribes to the default
    /// channel, `livechat:messages`.
    pub async fn connect(url: &str) -> Result<Self, RedisFanoutError> {
        Self::connect_on(url, "livechat:messages").await
    }

    /// Connects and subscribes to `channel`; nodes of one deployment share it.
    pub async fn connect_on(url: &str, channel: &str) -> Result<Self, RedisFanoutError> {
        let info = url.into_connection_info()?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let client = redis::Client::open(info)?;

        // Shared with the push sender, which counts what a full queue turns away.
        let counters = Arc::new(Counters::default());
        let (pushes, incoming) = mpsc::channel::<PushInfo>(QUEUE);
        let counted = counters.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                if pushes.try_send(push).is_err() {
                    counted.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2));
        let mut conn = ConnectionManager::new_with_config(client, config).await?;
        conn.subscribe(channel).await?;

        let (outgoing, to_publish) = mpsc::channel::<Vec<u8>>(QUEUE);
        let inner = Arc::new(Inner {
            node: Uuid::new_v4(),
            channel: channel.to_owned(),
            conn: conn.clone(),
            outgoing,
            incoming: std::sync::Mutex::new(Some(incoming)),
            counters,
        });
        tokio::spawn(publish(inner.clone(), to_publish));
        Ok(Self { inner })
    }

    /// Starts delivering what other nodes publish to `chat`'s sockets. Call it once,
    /// with the livechat built with this fan-out; later calls do nothing.
    pub fn deliver_to(&self, chat: LiveChat) {
        let incoming = self
            .inner
            .incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(incoming) = incoming {
            tokio::spawn(receive(self.inner.clone(), incoming, chat));
        }
    }

    /// Checks that Redis answers (`PING` within 2 s), for readiness probes.
    pub async fn ping(&self) -> Result<(), RedisFanoutError> {
        let mut conn = self.inner.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Whether the subscription to the channel is live: `false` from a lost connection
    /// until the reconnected connection has subscribed again, for readiness probes. A
    /// `PING` alone does not tell, since a connection can come back without its
    /// subscription, and then nothing from the other nodes arrives.
    ///
    /// Tracked by the task that [`deliver_to`](Self::deliver_to) starts; before that
    /// call it stays `true`, as [`connect`](Self::connect) has subscribed.
    pub fn is_subscribed(&self) -> bool {
        !self.inner.counters.disconnected.load(Ordering::Relaxed)
    }

    /// Messages published, received from other nodes, dropped on a full queue, and
    /// resubscriptions after a lost connection, in that order.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        let c = &self.inner.counters;
        (
            c.published.load(Ordering::Relaxed),
            c.received.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
            c.resubscriptions.load(Ordering::Relaxed),
        )
    }
}

impl RedisFanout {
    fn send(&self, envelope: &Envelope) {
        let Ok(bytes) = serde_json::to_vec(envelope) else {
            return;
        };
        if self.inner.outgoing.try_send(bytes).is_err() {
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Fanout for RedisFanout {
    fn committed(&self, message: &Message) {
        self.send(&Envelope {
            node: self.inner.node,
            message: Some(message.clone()),
            signal: None,
        });
    }

    fn signal(&self, signal: &Signal) {
        self.send(&Envelope {
            node: self.inner.node,
            message: None,
            signal: Some(signal.clone()),
        });
    }
}

async fn publish(inner: Arc<Inner>, mut to_publish: mpsc::Receiver<Vec<u8>>) {
    let mut conn = inner.conn.clone();
    let mut failing = false;
    while let Some(bytes) = to_publish.recv().await {
        match conn.publish::<_, _, i64>(&inner.channel, bytes).await {
            Ok(_) => {
                inner.counters.published.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::info!("redis fan-out: publishing again");
                    failing = false;
                }
            }
            Err(e) => {
                inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
                // One line per outage, not one per message.
                if !failing {
                    tracing::warn!(error = %e, "redis fan-out: cannot publish; other nodes rely on the change feed meanwhile");
                    failing = true;
                }
            }
        }
    }
}

async fn receive(inner: Arc<Inner>, mut incoming: mpsc::Receiver<PushInfo>, chat: LiveChat) {
    // Presence: this node's list goes out on a task of its own, so a stalled store
    // (which holds up this loop) never makes the others think this node is gone.
    chat.presence_heartbeat(true);
    let beating = chat.clone();
    let heartbeat = tokio::spawn(async move {
        let mut beat = tokio::time::interval(PRESENCE_HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        loop {
            beat.tick().await;
            beating.presence_heartbeat(false);
        }
    });
    let mut expiry = tokio::time::interval(PRESENCE_HEARTBEAT);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let push = tokio::select! {
            // What has arrived is read before anyone is forgotten for silence.
            biased;
            push = incoming.recv() => match push {
                Some(push) => push,
                None => break,
            },
            _ = expiry.tick() => {
                chat.presence_expire();
                continue;
            }
        };
        match push.kind {
            PushKind::Message => {
                let Some(payload) = push.data.get(1) else {
                    continue;
                };
                let Ok(bytes) = redis::from_redis_value_ref::<Vec<u8>>(payload) else {
                    continue;
                };
                match serde_json::from_slice::<Envelope>(&bytes) {
                    Ok(envelope) if envelope.node == inner.node => {}
                    Ok(envelope) => {
                        inner.counters.received.fetch_add(1, Ordering::Relaxed);
                        if let Some(message) = envelope.message {
                            chat.committed_elsewhere(message).await;
                        }
                        if let Some(signal) = envelope.signal {
                            chat.signalled_elsewhere(signal).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "redis fan-out: unreadable message"),
                }
            }
            PushKind::Disconnection => {
                inner.counters.disconnected.store(true, Ordering::Relaxed);
                tracing::warn!("redis fan-out: connection lost, reconnecting");
            }
            PushKind::Subscribe if inner.counters.disconnected.swap(false, Ordering::Relaxed) => {
                inner
                    .counters
                    .resubscriptions
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!("redis fan-out: subscribed again, catching up");
                chat.catch_up().await;
                chat.presence_heartbeat(true);
            }
            _ => {}
        }
    }
    heartbeat.abort();
}
