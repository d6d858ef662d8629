//! Embedding examples for livechat-core: see `axum.rs` and `hyper.rs`.
