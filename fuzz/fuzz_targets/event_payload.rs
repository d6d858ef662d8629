//! Socket event payloads: whatever a client sends, decoding answers with a value or
//! an `invalid_payload` error, and never panics or recurses without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livechat_core::protocol::{
    ContactRef, HistoryRequest, SendMessage, SyncRequest, WorkspaceRef, decode_request, json_depth,
};
use livechat_core::{ChatError, ErrorCode};

fn check<T: serde::de::DeserializeOwned>(value: &serde_json::Value) {
    if let Err(e) = decode_request::<T>(value.clone(), 32) {
        assert!(
            matches!(e.code(), ErrorCode::InvalidPayload),
            "a decode error must be invalid_payload, got {e:?}"
        );
        let _: &ChatError = &e;
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = json_depth(&value);
    check::<ContactRef>(&value);
    check::<WorkspaceRef>(&value);
    check::<SendMessage>(&value);
    check::<HistoryRequest>(&value);
    check::<SyncRequest>(&value);
});
