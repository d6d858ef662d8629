#![doc = include_str!("../docs/crate.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
mod builder;
mod chat;
pub mod cluster;
pub mod config;
mod delivery;
mod drain;
pub mod error;
mod features;
mod guard;
mod handlers;
mod layer;
pub mod metrics;
pub mod model;
pub mod moderation;
pub mod presence;
pub mod protocol;
pub mod sms;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;

pub use builder::LiveChatBuilder;
pub use chat::{LiveChat, Publish};
pub use config::Limits;
pub use delivery::Stats;
pub use drain::DrainReport;
pub use error::{ChatError, ErrorCode};
pub use guard::{OriginPolicy, PeerAddr, Rate, TrustedProxies};
pub use layer::{LiveChatBody, LiveChatLayer, LiveChatService, NotFound};
