//! The rules of livechat's bundled plugins, as plain Rust.
//!
//! The WebAssembly guests in `plugins/guests/` are thin wrappers over this crate, so
//! the rules are unit-tested, benchmarked and fuzzed natively, and the same code runs
//! in the sandbox.

pub mod moderation;
pub mod sanitize;

/// A rule's decision, mirroring the WIT `verdict`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the message as it is.
    Allow,
    /// Keep it with this body.
    Rewrite(String),
    /// Refuse it, with a reason for the sender.
    Reject(String),
    /// Keep it, marked with a reason for agents.
    Flag(String),
}
