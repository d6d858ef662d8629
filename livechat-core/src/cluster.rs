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

use crate::model::Message;

/// Where a node announces what it committed, for the other nodes.
///
/// The writer calls [`Fanout::committed`] for every message this node stored, after
/// delivering it to its own sockets. The call must not block: queue and send from a
/// task of your own. On the receiving side, hand each message to
/// [`LiveChat::committed_elsewhere`](crate::LiveChat::committed_elsewhere).
pub trait Fanout: Send + Sync + 'static {
    /// Announces a message this node committed.
    fn committed(&self, message: &Message);
}

#[cfg(feature = "postgres")]
mod change_feed;
#[cfg(feature = "postgres")]
pub use change_feed::ChangeFeed;

#[cfg(feature = "redis")]
mod redis_fanout;
#[cfg(feature = "redis")]
pub use redis_fanout::{RedisFanout, RedisFanoutError};
