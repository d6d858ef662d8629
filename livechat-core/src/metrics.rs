//! What livechat measures, recorded through the [`metrics`](https://docs.rs/metrics)
//! facade: the host decides how to export it by installing a recorder (the reference
//! server installs `metrics-exporter-prometheus` and serves `/metrics`). Without a
//! recorder, recording costs next to nothing.
//!
//! Every name is a constant here, with its labels. Label values come from closed
//! sets (event names, error codes, plugin names the host chose), never from clients,
//! so no client can grow the number of series.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | [`CONNECTIONS`] | gauge | `transport`: `websocket`, `polling` |
//! | [`CONNECTIONS_OPENED`] | counter | |
//! | [`CONNECTIONS_REFUSED`] | counter | `reason`: `unauthorized`, `origin`, `rate_limited`, `too_many_connections`, `server_full`, `draining` |
//! | [`DISCONNECTIONS`] | counter | `reason`: `client`, `server`, `transport_closed`, `transport_error`, `polling_error`, `heartbeat_timeout`, `parse_error`, `closing_server` |
//! | [`REQUESTS`] | counter | `event`, `outcome`: `ok` or an error code |
//! | [`MESSAGES_IN`] | counter | `direction`, `outcome`: `stored`, `duplicate` or an error code |
//! | [`MESSAGES_OUT`] | counter | `origin`: `local`, `remote`, `store` |
//! | [`DELIVERIES`] | counter | `outcome`: `sent`, `slow_consumer`, `closed`, `failed` |
//! | [`BROADCAST_LATENCY`] | histogram (s) | |
//! | [`COMMIT_LATENCY`] | histogram (s) | |
//! | [`COMMIT_BATCH`] | histogram | |
//! | [`COMMIT_QUEUE`] | gauge | |
//! | [`PLUGIN_CALLS`] | counter | `plugin`, `outcome`: `allow`, `rewrite`, `reject`, `flag`, `timeout`, `trap`, `invalid_output`, `overloaded` |
//! | [`RECOVERIES`] | counter | `outcome`: `complete`, `missed` |
//! | [`RECOVERED_MESSAGES`] | counter | |
//!
//! Gauges that are cheaper to read than to track are set by
//! [`LiveChat::record_gauges`](crate::LiveChat::record_gauges), which an exporter
//! calls before it renders.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::error::ChatError;
use crate::model::Direction;
use crate::moderation::{ModerationError, Verdict};

/// Open Socket.IO connections on this node, by their transport at the moment of
/// reading (clients usually open with `polling`, then upgrade).
pub const CONNECTIONS: &str = "livechat_connections";
/// Connections admitted (namespace connects that passed the handshake).
pub const CONNECTIONS_OPENED: &str = "livechat_connections_opened_total";
/// Connection attempts refused, by reason: at the transport open (over the address's
/// budget, draining) or at the namespace connect (token, origin, limits).
pub const CONNECTIONS_REFUSED: &str = "livechat_connections_refused_total";
/// Connections that ended, by reason.
pub const DISCONNECTIONS: &str = "livechat_disconnections_total";
/// Socket requests answered, by event and outcome (`ok`, or the error code the
/// client was given: `rate_limited`, `forbidden`…). Joins are `join_contact` and
/// `join_workspace`.
pub const REQUESTS: &str = "livechat_requests_total";
/// Messages offered to the pipeline (sockets, REST, SMS, server code), by direction
/// and outcome: `stored`, `duplicate` (a retried `clientId`), or the error code.
pub const MESSAGES_IN: &str = "livechat_messages_in_total";
/// Messages broadcast by this node, by how it learned of them: committed here
/// (`local`), from another node (`remote`), or read from the store to fill a gap.
pub const MESSAGES_OUT: &str = "livechat_messages_out_total";
/// `new_message` hand-overs to sockets, by outcome (`slow_consumer`: the socket's
/// buffer was full and it was cut off).
pub const DELIVERIES: &str = "livechat_deliveries_total";
/// Seconds from a send's arrival to its broadcast to this node's sockets: checks,
/// plugins, the commit queue, the commit and the hand-over.
pub const BROADCAST_LATENCY: &str = "livechat_broadcast_latency_seconds";
/// Seconds one store commit (a batch of messages) takes.
pub const COMMIT_LATENCY: &str = "livechat_commit_seconds";
/// Messages per store commit.
pub const COMMIT_BATCH: &str = "livechat_commit_batch_messages";
/// Sends waiting for the commit writer.
pub const COMMIT_QUEUE: &str = "livechat_commit_queue";
/// Moderator (plugin) calls, by plugin and outcome: a verdict, or how the call
/// failed (for a WebAssembly plugin a memory limit shows as a `trap`).
pub const PLUGIN_CALLS: &str = "livechat_plugin_calls_total";
/// Recoveries (joins with `after`): `complete`, or `missed` when more was missed than
/// the limit allows and the client was told to reload.
pub const RECOVERIES: &str = "livechat_recoveries_total";
/// Messages replayed to recovering sockets.
pub const RECOVERED_MESSAGES: &str = "livechat_recovered_messages_total";

/// Bucket bounds (seconds) that suit [`BROADCAST_LATENCY`] and [`COMMIT_LATENCY`]:
/// from 100 µs to 10 s. Exporters that need buckets can use these.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bucket bounds that suit [`COMMIT_BATCH`].
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Gives every metric its description and unit in the installed recorder. Call it
/// after installing one; building a [`LiveChat`](crate::LiveChat) calls it too.
pub fn describe() {
    describe_gauge!(CONNECTIONS, "Open Socket.IO connections, by transport");
    describe_counter!(CONNECTIONS_OPENED, "Connections admitted");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connection attempts refused, by reason"
    );
    describe_counter!(DISCONNECTIONS, "Connections that ended, by reason");
    describe_counter!(REQUESTS, "Socket requests answered, by event and outcome");
    describe_counter!(MESSAGES_IN, "Messages offered, by direction and outcome");
    describe_counter!(MESSAGES_OUT, "Messages broadcast by this node, by origin");
    describe_counter!(DELIVERIES, "new_message hand-overs to sockets, by outcome");
    describe_histogram!(
        BROADCAST_LATENCY,
        Unit::Seconds,
        "From a send's arrival to its broadcast"
    );
    describe_histogram!(COMMIT_LATENCY, Unit::Seconds, "Duration of a store commit");
    describe_histogram!(COMMIT_BATCH, Unit::Count, "Messages per store commit");
    describe_gauge!(COMMIT_QUEUE, "Sends waiting for the commit writer");
    describe_counter!(PLUGIN_CALLS, "Moderator calls, by plugin and outcome");
    describe_counter!(RECOVERIES, "Recoveries (joins with after), by outcome");
    describe_counter!(
        RECOVERED_MESSAGES,
        "Messages replayed to recovering sockets"
    );
}

/// Counts a refused connection attempt under [`CONNECTIONS_REFUSED`]. livechat
/// counts its own refusals; a host that refuses a connection before livechat sees it
/// (by origin, say, at its edge) counts it here, so that every refusal is in one
/// place.
pub fn connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

pub(crate) fn connection_opened() {
    counter!(CONNECTIONS_OPENED).increment(1);
}

pub(crate) fn disconnection(reason: &'static str) {
    counter!(DISCONNECTIONS, "reason" => reason).increment(1);
}

pub(crate) fn gauges(websocket: usize, polling: usize, commit_queue: usize) {
    gauge!(CONNECTIONS, "transport" => "websocket").set(websocket as f64);
    gauge!(CONNECTIONS, "transport" => "polling").set(polling as f64);
    gauge!(COMMIT_QUEUE).set(commit_queue as f64);
}

pub(crate) fn request<T>(event: &'static str, result: &Result<T, ChatError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    counter!(REQUESTS, "event" => event, "outcome" => outcome).increment(1);
}

pub(crate) fn message_in(direction: Direction, outcome: &'static str) {
    let direction = match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    };
    counter!(MESSAGES_IN, "direction" => direction, "outcome" => outcome).increment(1);
}

pub(crate) fn message_out(origin: &'static str) {
    counter!(MESSAGES_OUT, "origin" => origin).increment(1);
}

pub(crate) fn deliveries(outcome: &'static str, n: u64) {
    if n > 0 {
        counter!(DELIVERIES, "outcome" => outcome).increment(n);
    }
}

pub(crate) fn commit(took: Duration, messages: usize) {
    histogram!(COMMIT_LATENCY).record(took);
    histogram!(COMMIT_BATCH).record(messages as f64);
}

pub(crate) fn broadcast_latency(took: Duration) {
    // Only for messages handed to sockets here: the writer calls it after delivery.
    histogram!(BROADCAST_LATENCY).record(took);
}

pub(crate) fn plugin_call(plugin: &str, result: &Result<Verdict, ModerationError>) {
    let outcome = match result {
        Ok(Verdict::Allow) => "allow",
        Ok(Verdict::Rewrite(_)) => "rewrite",
        Ok(Verdict::Reject(_)) => "reject",
        Ok(Verdict::Flag(_)) => "flag",
        Err(ModerationError::Timeout(_)) => "timeout",
        Err(ModerationError::Failed { .. }) => "trap",
        Err(ModerationError::InvalidOutput { .. }) => "invalid_output",
        Err(ModerationError::Overloaded(_)) => "overloaded",
    };
    counter!(PLUGIN_CALLS, "plugin" => plugin.to_owned(), "outcome" => outcome).increment(1);
}

pub(crate) fn recovery(complete: bool, replayed: usize) {
    let outcome = if complete { "complete" } else { "missed" };
    counter!(RECOVERIES, "outcome" => outcome).increment(1);
    counter!(RECOVERED_MESSAGES).increment(replayed as u64);
}
