//! Everything of a handshake an attacker controls: the token (verified with a fixed
//! secret), the `auth` payload, the query string, `Authorization`, `X-Forwarded-For`
//! and `Origin`. Nothing panics; a fuzzed token is never accepted.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use livechat_core::auth::{JwtAuthenticator, bearer_token, token_from_handshake};
use livechat_core::{OriginPolicy, TrustedProxies};

#[derive(Arbitrary, Debug)]
struct Handshake {
    token: String,
    query: String,
    authorization: String,
    auth_json: String,
    forwarded_for: String,
    origin: String,
    peer: [u8; 4],
}

fuzz_target!(|h: Handshake| {
    let auth = JwtAuthenticator::hs256(b"fuzzing-secret-fuzzing-secret-fuzz");
    assert!(auth.verify(&h.token).is_err(), "a fuzzed token was accepted: {:?}", h.token);

    let mut req = http::Request::builder();
    if let Ok(uri) = format!("/socket.io/?{}", h.query).parse::<http::Uri>() {
        req = req.uri(uri);
    }
    if let Ok(value) = http::HeaderValue::from_str(&h.authorization) {
        req = req.header(http::header::AUTHORIZATION, value);
    }
    if let Ok(req) = req.body(()) {
        let (parts, ()) = req.into_parts();
        let payload = serde_json::from_str::<serde_json::Value>(&h.auth_json).ok();
        if let Some(token) = token_from_handshake(payload.as_ref(), &parts) {
            assert!(auth.verify(&token).is_err());
        }
        let _ = bearer_token(&parts.headers);
    }

    let proxies = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()]);
    let peer = std::net::IpAddr::from(h.peer);
    let client = proxies.client_ip(peer, Some(&h.forwarded_for));
    if !peer.to_string().starts_with("10.") {
        assert_eq!(client, peer, "X-Forwarded-For believed from an untrusted peer");
    }
    let _ = OriginPolicy::local_only().allows(Some(&h.origin));
    let _ = OriginPolicy::list(["https://a.example"]).allows(Some(&h.origin));
});
