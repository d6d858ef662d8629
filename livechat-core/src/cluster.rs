//! Several nodes on one store.
//!
//! Each node delivers to its own sockets. What one node commits reaches the others by
//! up to two roads, and every node delivers each message once, in `seq` order,
//! whichever road brought it and however often:
//!
//! - a [`Fanout`] (with feature `redis`, [`RedisFanout`]) carries every committed
//!   message to the other nodes at once;
//! - with feature `postgres`, the [`ChangeFeed`] listens to the `livechat_messages`
//!   channel that the store's insert trigger notifies, so rows that another program
//!   inserts with plain SQL reach the agents too, and after any gap (a reconnect, a
//!   node start) it reads what it missed by `seq`.
//!
//! The writer of each node remembers the last `seq` it delivered per workspace; a
//! message that leaves a gap makes it read the gap from the store first, and one it
//! has seen is dropped. A node started alone needs none of this.
//!
//! ```no_run
//! # #[cfg(all(feature = "postgres", feature = "redis"))]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use livechat_core::LiveChat;
//! use livechat_core::cluster::{ChangeFeed, RedisFanout};
//! use livechat_core::store::PostgresStore;
//!
//! let store = PostgresStore::open("postgres://livechat@127.0.0.1/livechat").await?;
//! let redis = RedisFanout::connect("redis://127.0.0.1:6379/").await?;
//! let (layer, chat) = LiveChat::builder()
//!     .store(store.clone())
//!     .fanout(redis.clone())
//!     .build_layer();
//! redis.deliver_to(chat.clone());
//! let feed = ChangeFeed::start(store.pool().clone(), chat.clone());
//! # let _ = (layer, feed);
//! # Ok(()) }
//! ```
//!
//! # Why not a Socket.IO adapter
//!
//! A socketioxide adapter such as `socketioxide-redis` relays each broadcast to the
//! other nodes' sockets as it is emitted, past the writer. Here every node delivers
//! each committed message itself, once and in `seq` order, through the writer's
//! per-workspace watermark, with gaps read from the store; while Redis is away the
//! change feed carries the messages. So no adapter answers room queries across
//! nodes: presence travels on the fan-out as well, as a [`Signal`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::Message;
use crate::presence::PresenceUpdate;

/// What passes between nodes besides messages: typing, read receipts, reactions,
/// status changes and presence. Not stored, and not replayed after an outage: the
/// stored state (read flags, reactions, statuses) is read with history, and presence
/// is corrected by the next heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub enum Signal {
    /// Emit `event` with `data` to the sockets in `rooms`, except those also in one
    /// of `except`.
    Emit {
        /// The rooms.
        rooms: Vec<String>,
        /// Rooms whose sockets are left out (the sender's own, for typing).
        except: Vec<String>,
        /// The event name.
        event: String,
        /// Its payload.
        data: serde_json::Value,
    },
    /// What a node says about its users' presence.
    Presence {
        /// The node.
        node: Uuid,
        /// What changed there, or its whole list.
        update: PresenceUpdate,
    },
}

/// Where a node announces what it committed, for the other nodes.
///
/// The writer calls [`Fanout::committed`] for every message this node stored, after
/// delivering it to its own sockets. The call must not block: queue and send from a
/// task of your own. On the receiving side, hand each message to
/// [`LiveChat::committed_elsewhere`](crate::LiveChat::committed_elsewhere).
pub trait Fanout: Send + Sync + 'static {
    /// Announces a message this node committed.
    fn committed(&self, message: &Message);

    /// Passes a [`Signal`] to the other nodes, which hand it to
    /// [`LiveChat::signalled_elsewhere`](crate::LiveChat::signalled_elsewhere). Like
    /// `committed`, it must not block. A fan-out that carries signals also calls
    /// [`LiveChat::presence_heartbeat`](crate::LiveChat::presence_heartbeat) once with
    /// `ask` when it starts delivering and then every
    /// [`PRESENCE_HEARTBEAT`](crate::presence::PRESENCE_HEARTBEAT), from a task of its
    /// own, and [`LiveChat::presence_expire`](crate::LiveChat::presence_expire) as
    /// often, from the task that hands over what arrives. The default drops signals:
    /// typing, receipts and presence then stay on their node.
    fn signal(&self, signal: &Signal) {
        let _ = signal;
    }
}

#[cfg(feature = "postgres")]
mod change_feed;
#[cfg(feature = "postgres")]
pub use change_feed::ChangeFeed;

#[cfg(feature = "redis")]
mod redis_fanout;
#[cfg(feature = "redis")]
pub use redis_fanout::{RedisFanout, RedisFanoutError};
