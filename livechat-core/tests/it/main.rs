//! livechat-core's integration tests: one binary, one module per area.

mod abuse;
#[cfg(all(feature = "postgres", feature = "redis"))]
mod cluster;
mod conformance;
mod delivery;
mod features;
mod harness;
mod isolation;
mod model;
mod moderation;
mod pipeline;
mod protocol;
#[cfg(feature = "twilio")]
mod sms;
