//! livechat-core's integration tests: one binary, one module per area.

mod conformance;
mod harness;
mod protocol;
