//! Limits and their documented defaults.

use std::time::Duration;

use crate::guard::Rate;

/// The limits every connection and request is held to. Each has a sane default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Largest message body in bytes (`payload_too_large` above). Defaults to 16 KiB.
    pub max_body_bytes: usize,
    /// Largest Engine.IO frame (websocket message or polling request body) in bytes;
    /// a larger one closes that connection only. Defaults to 1 MiB.
    pub max_frame_bytes: usize,
    /// Deepest JSON nesting of a request payload. Defaults to 32.
    pub max_json_depth: usize,
    /// Rooms one socket may be in (its own user room included). Defaults to 100.
    pub max_rooms_per_socket: usize,
    /// Longest `clientId` in bytes. Defaults to 128.
    pub max_client_id_bytes: usize,
    /// `send_message` budget per user, across all their sockets and reconnects.
    /// Defaults to 10/s with bursts of 30.
    pub send_per_user: Rate,
    /// `send_message` budget per socket. Defaults to 10/s with bursts of 30.
    pub send_per_socket: Rate,
    /// `send_message` budget per workspace, all its agents together. Defaults to 100/s
    /// with bursts of 300.
    pub send_per_workspace: Rate,
    /// Budget per socket for `typing`, `mark_read`, `react` and `unread_counts`
    /// together. Defaults to 10/s with bursts of 20.
    pub signals_per_socket: Rate,
    /// A repeated `isTyping: true` is passed on at most this often (it keeps the state
    /// alive in between). Defaults to 2 s.
    pub typing_interval: Duration,
    /// How long "typing" lasts without a new `isTyping: true`; then the others are
    /// told the user stopped. Defaults to 6 s.
    pub typing_timeout: Duration,
    /// Reactions one user may have on one message. Defaults to 10.
    pub max_reactions_per_user: usize,
    /// Connection attempts per client address (needs [`crate::PeerAddr`]). Defaults to
    /// 5/s with bursts of 20.
    pub connect_rate_per_ip: Rate,
    /// Open connections per client address (needs [`crate::PeerAddr`]). Defaults to 50.
    pub max_connections_per_ip: usize,
    /// Open connections per user. Defaults to 20.
    pub max_connections_per_user: usize,
    /// Open connections in all. Defaults to 10 000.
    pub max_connections: usize,
    /// Requests of one socket waiting to be handled; more get `rate_limited` at once.
    /// Defaults to 64.
    pub max_pending_per_socket: usize,
    /// Packets buffered per socket before it counts as too slow. Defaults to 256.
    pub socket_buffer_packets: usize,
    /// Bytes a websocket reads at a time; the buffer lives as long as the connection,
    /// so it is most of what an idle agent costs. Larger frames are read in several
    /// steps. Defaults to 1 KiB (socketioxide's default is 4 KiB).
    pub ws_read_buffer_bytes: usize,
    /// How long a client has to send its namespace connect (with the token) after the
    /// transport opened. Defaults to 10 s.
    pub connect_timeout: Duration,
    /// Sends waiting for the commit writer; more get `unavailable` with a retry hint.
    /// Defaults to 4096.
    pub commit_queue: usize,
    /// Most messages in one store commit. Defaults to 2048: a commit writes each index
    /// page it touches once, so the more sends share one, the fewer pages each costs;
    /// a batch only grows this large when that many sends are already waiting. A
    /// smaller cap shortens the latency tail at a steady moderate load (`BENCHMARKS.md`).
    pub commit_batch: usize,
    /// How long the writer waits for more sends before committing a batch that is not
    /// full. Defaults to zero: batches form by themselves while a commit is running.
    pub commit_wait: Duration,
    /// Most messages a reconnecting client gets replayed; past that it is told to
    /// reload (`complete: false`). Defaults to 1000.
    pub max_recovery_messages: usize,
    /// Contacts and granted memberships kept in memory, so that a send does not ask
    /// the store who may see what. Defaults to 65 536 of each.
    pub directory_cache_entries: usize,
    /// How long a cached membership is trusted. Removals through this node (or, on
    /// Postgres, through any node or SQL with the change feed on) take effect at once;
    /// this bounds how long a removal that nobody announced goes unnoticed. Defaults
    /// to 60 s.
    pub membership_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            max_frame_bytes: 1024 * 1024,
            max_json_depth: 32,
            max_rooms_per_socket: 100,
            max_client_id_bytes: 128,
            send_per_user: Rate::new(10, 30),
            send_per_socket: Rate::new(10, 30),
            send_per_workspace: Rate::new(100, 300),
            signals_per_socket: Rate::new(10, 20),
            typing_interval: Duration::from_secs(2),
            typing_timeout: Duration::from_secs(6),
            max_reactions_per_user: 10,
            connect_rate_per_ip: Rate::new(5, 20),
            max_connections_per_ip: 50,
            max_connections_per_user: 20,
            max_connections: 10_000,
            max_pending_per_socket: 64,
            socket_buffer_packets: 256,
            ws_read_buffer_bytes: 1024,
            connect_timeout: Duration::from_secs(10),
            commit_queue: 4096,
            commit_batch: 2048,
            commit_wait: Duration::ZERO,
            max_recovery_messages: 1000,
            directory_cache_entries: 65_536,
            membership_ttl: Duration::from_secs(60),
        }
    }
}
