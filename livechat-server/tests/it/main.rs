//! livechat-server's integration tests: the real server on 127.0.0.1:0 over a real
//! SQLite file, driven over HTTP, by `rust_socketio`, by the official
//! `socket.io-client` from npm, and (the demo inbox) in headless Chromium.

mod binary;
mod browser;
mod crash;
mod harness;
mod js;
mod nodes;
mod ops;
mod plugins;
mod rest;
mod security;
mod sms;
