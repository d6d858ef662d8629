//! [`LiveChatBuilder`]: store, authenticator and limits in; a tower layer and a handle out.

use std::sync::Arc;

use socketioxide::SocketIo;

use crate::auth::{Authenticator, DynAuthenticator, Identity};
use crate::chat::LiveChat;
use crate::cluster::Fanout;
use crate::config::Limits;
use crate::error::AuthError;
use crate::guard::{OriginPolicy, TrustedProxies};
use crate::layer::{LiveChatLayer, LiveChatService, NotFound};
use crate::moderation::{DynModerator, Moderator};
use crate::store::{DynStore, MemoryStore, Store};

/// Builds a livechat service. Start with [`LiveChat::builder`].
///
/// ```
/// use livechat_core::{LiveChat, auth::JwtAuthenticator, store::MemoryStore};
/// let (layer, chat) = LiveChat::builder()
///     .store(MemoryStore::new())
///     .authenticator(JwtAuthenticator::hs256(b"a secret of at least 32 bytes...."))
///     .build_layer();
/// // Mount `layer` on your router: `axum::Router::new().layer(layer)`.
/// # let _ = (layer, chat);
/// ```
#[derive(Default)]
pub struct LiveChatBuilder {
    store: Option<Arc<dyn DynStore>>,
    auth: Option<Arc<dyn DynAuthenticator>>,
    limits: Limits,
    origins: OriginPolicy,
    trusted_proxies: TrustedProxies,
    moderators: Vec<Arc<dyn DynModerator>>,
    fanout: Option<Arc<dyn Fanout>>,
    ping_interval: Option<std::time::Duration>,
    ping_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for LiveChatBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveChatBuilder")
            .field("has_store", &self.store.is_some())
            .field("has_authenticator", &self.auth.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

/// Refuses every token: the fail-closed default when no authenticator is set.
struct RefuseAll;
impl Authenticator for RefuseAll {
    async fn authenticate(&self, _: &str) -> Result<Identity, AuthError> {
        Err(AuthError::Invalid("no authenticator is configured".into()))
    }
}

impl LiveChatBuilder {
    /// Where messages and the directory live. Defaults to a [`MemoryStore`].
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Who may connect. Defaults to refusing everyone (fail closed).
    pub fn authenticator(mut self, auth: impl Authenticator) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// The browser origins allowed to connect. Defaults to
    /// [`OriginPolicy::local_only`]: pages from localhost only.
    pub fn allowed_origins(mut self, origins: OriginPolicy) -> Self {
        self.origins = origins;
        self
    }

    /// The proxies whose `X-Forwarded-For` names the client. Defaults to none: the
    /// peer address is the client.
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Adds a moderator; messages pass the moderators in the order they were added,
    /// after validation and before storage. Defaults to none.
    pub fn moderator(mut self, moderator: impl Moderator) -> Self {
        self.moderators.push(Arc::new(moderator));
        self
    }

    /// Where this node announces each message it commits, for other nodes on the same
    /// store (see [`crate::cluster`]). Defaults to none: one node.
    pub fn fanout(mut self, fanout: impl Fanout) -> Self {
        self.fanout = Some(Arc::new(fanout));
        self
    }

    /// All limits at once. Defaults to [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How often the server pings each client. Defaults to socket.io's 25 s.
    pub fn ping_interval(mut self, interval: std::time::Duration) -> Self {
        self.ping_interval = Some(interval);
        self
    }

    /// How long a client has to answer a ping before its connection is closed; a
    /// client that stopped reading is closed by this. Defaults to socket.io's 20 s.
    pub fn ping_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.ping_timeout = Some(timeout);
        self
    }

    fn build_io(self) -> (socketioxide::SocketIoBuilder, LiveChatParts) {
        let frame = self.limits.max_frame_bytes;
        let mut io = SocketIo::builder()
            // Polling: the HTTP body limit. Websocket: the message and frame limits,
            // which socketioxide otherwise leaves at 64 MiB / 16 MiB.
            .max_payload(frame as u64)
            .ws_max_message_size(frame)
            .ws_max_frame_size(frame)
            .max_buffer_size(self.limits.socket_buffer_packets)
            .ws_read_buffer_size(self.limits.ws_read_buffer_bytes.max(64))
            .connect_timeout(self.limits.connect_timeout);
        if let Some(interval) = self.ping_interval {
            io = io.ping_interval(interval);
        }
        if let Some(timeout) = self.ping_timeout {
            io = io.ping_timeout(timeout);
        }
        let parts = LiveChatParts {
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            auth: self.auth.unwrap_or_else(|| {
                tracing::warn!("no authenticator configured: every connection will be refused");
                Arc::new(RefuseAll)
            }),
            limits: self.limits,
            origins: self.origins,
            trusted_proxies: self.trusted_proxies,
            moderators: self.moderators,
            fanout: self.fanout,
        };
        (io, parts)
    }

    /// A tower layer to mount on a router, and the handle.
    pub fn build_layer(self) -> (LiveChatLayer, LiveChat) {
        let (io, parts) = self.build_io();
        let (layer, io) = io.build_layer();
        let chat = parts.into_chat(io);
        (LiveChatLayer::new(layer, chat.clone()), chat)
    }

    /// A standalone service (404 for everything but `/socket.io`), for bare hyper, and
    /// the handle.
    pub fn build_svc(self) -> (LiveChatService<NotFound>, LiveChat) {
        let (io, parts) = self.build_io();
        let (layer, io) = io.build_layer();
        let chat = parts.into_chat(io);
        (
            LiveChatLayer::new(layer, chat.clone()).service(NotFound),
            chat,
        )
    }
}

/// Everything a [`LiveChat`] is made of but the socket.io handle.
pub(crate) struct LiveChatParts {
    pub(crate) store: Arc<dyn DynStore>,
    pub(crate) auth: Arc<dyn DynAuthenticator>,
    pub(crate) limits: Limits,
    pub(crate) origins: OriginPolicy,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) moderators: Vec<Arc<dyn DynModerator>>,
    pub(crate) fanout: Option<Arc<dyn Fanout>>,
}

impl LiveChatParts {
    fn into_chat(self, io: SocketIo) -> LiveChat {
        let chat = LiveChat::new(io.clone(), self);
        crate::handlers::register(&io, chat.clone());
        chat
    }
}
