//! livechat-server's integration tests: the real server on 127.0.0.1:0 over a real
//! SQLite file, driven over HTTP, by `rust_socketio`, and by the official
//! `socket.io-client` from npm.

mod binary;
mod crash;
mod harness;
mod js;
mod nodes;
mod plugins;
mod rest;
mod security;
mod sms;
