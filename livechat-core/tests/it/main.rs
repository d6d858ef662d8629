//! livechat-core's integration tests: one binary, one module per area.

mod abuse;
mod conformance;
mod delivery;
mod harness;
mod isolation;
mod model;
mod moderation;
mod pipeline;
mod protocol;
