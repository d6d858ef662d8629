//! The moderation chain end to end through a real client: reject, rewrite, flag,
//! failure policies, order.

use std::time::Duration;

use livechat_core::Limits;
use livechat_core::moderation::{Candidate, FailurePolicy, ModerationError, Moderator, Verdict};
use livechat_core::store::MemoryStore;
use serde_json::json;

use crate::harness::Server;

/// Decides by keywords in the body, so each test can ask for the verdict it needs.
struct Keywords;

impl Moderator for Keywords {
    fn name(&self) -> &str {
        "keywords"
    }
    async fn check(&self, m: Candidate<'_>) -> Result<Verdict, ModerationError> {
        Ok(if m.body.contains("spam") {
            Verdict::Reject("looks like spam".into())
        } else if m.body.contains("<b>") {
            Verdict::Rewrite(m.body.replace("<b>", "").replace("</b>", ""))
        } else if m.body.contains("refund") {
            Verdict::Flag("mentions a refund".into())
        } else if m.body.contains("erase") {
            Verdict::Rewrite("   ".into())
        } else {
            Verdict::Allow
        })
    }
}

/// Always fails, with the given policy.
struct Broken(FailurePolicy);

impl Moderator for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    async fn check(&self, _: Candidate<'_>) -> Result<Verdict, ModerationError> {
        Err(ModerationError::Failed {
            name: "broken".into(),
            reason: "trap".into(),
        })
    }
    fn failure_policy(&self) -> FailurePolicy {
        self.0
    }
}

/// Overloaded for its first check, then allows everything.
#[derive(Default)]
struct BusyOnce(std::sync::atomic::AtomicBool);

impl Moderator for BusyOnce {
    fn name(&self) -> &str {
        "busy-once"
    }
    async fn check(&self, _: Candidate<'_>) -> Result<Verdict, ModerationError> {
        if self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Ok(Verdict::Allow)
        } else {
            Err(ModerationError::Overloaded("busy-once".into()))
        }
    }
}

/// Flags whatever still contains markup when it runs: proves the order.
struct SeesMarkup;

impl Moderator for SeesMarkup {
    fn name(&self) -> &str {
        "sees-markup"
    }
    async fn check(&self, m: Candidate<'_>) -> Result<Verdict, ModerationError> {
        Ok(if m.body.contains('<') {
            Verdict::Flag("markup".into())
        } else {
            Verdict::Allow
        })
    }
}

#[tokio::test]
async fn verdicts_decide_what_is_stored_and_delivered() {
    let server = Server::start_custom(MemoryStore::new(), Limits::default(), |b| {
        b.moderator(Keywords).moderator(SeesMarkup)
    })
    .await;
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let c = json!(server.contact);

    let e = agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "buy spam now" }),
            "rejected",
        )
        .await;
    assert_eq!(e["message"], "looks like spam");
    agent.none("new_message", Duration::from_millis(200)).await;

    let m = agent
        .call_ok(
            "send_message",
            json!({ "contactId": c, "body": "<b>hello</b>" }),
        )
        .await;
    assert_eq!(m["body"], "hello", "stored rewritten");
    assert_eq!(
        m["moderation_flag"],
        serde_json::Value::Null,
        "the later moderator saw the rewritten body"
    );
    assert_eq!(
        agent.next("new_message").await["body"],
        "hello",
        "delivered rewritten"
    );

    let m = agent
        .call_ok(
            "send_message",
            json!({ "contactId": c, "body": "I want a refund" }),
        )
        .await;
    assert_eq!(m["moderation_flag"], "keywords: mentions a refund");
    assert_eq!(
        agent.next("new_message").await["moderation_flag"],
        "keywords: mentions a refund"
    );

    agent
        .call_err(
            "send_message",
            json!({ "contactId": c, "body": "erase me" }),
            "rejected",
        )
        .await;

    let page = agent
        .call_ok("sync", json!({ "workspaceId": server.ws, "after": 0 }))
        .await;
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["hello", "I want a refund"],
        "nothing rejected was stored"
    );
}

#[tokio::test]
async fn a_failing_moderator_fails_closed_unless_told_otherwise() {
    let closed = Server::start_custom(MemoryStore::new(), Limits::default(), |b| {
        b.moderator(Broken(FailurePolicy::Closed))
    })
    .await;
    let agent = closed.connect("alice").await;
    let e = agent
        .call_err(
            "send_message",
            json!({ "contactId": closed.contact, "body": "hi" }),
            "rejected",
        )
        .await;
    assert_eq!(e["message"], "the message could not be checked");

    let open = Server::start_custom(MemoryStore::new(), Limits::default(), |b| {
        b.moderator(Broken(FailurePolicy::Open))
    })
    .await;
    let agent = open.connect("alice").await;
    agent
        .call_ok(
            "send_message",
            json!({ "contactId": open.contact, "body": "hi" }),
        )
        .await;
}

#[tokio::test]
async fn an_overloaded_moderator_asks_for_a_retry_instead_of_refusing_the_content() {
    let server = Server::start_custom(MemoryStore::new(), Limits::default(), |b| {
        b.moderator(BusyOnce::default())
    })
    .await;
    let mut agent = server.connect("alice").await;
    agent
        .call_ok("join_workspace", json!({ "workspaceId": server.ws }))
        .await;
    let send = json!({ "contactId": server.contact, "body": "order 4551", "clientId": "c-1" });
    let e = agent
        .call_err("send_message", send.clone(), "unavailable")
        .await;
    assert!(
        e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "an overloaded moderator gives a retry hint: {e}"
    );
    let stored = agent.call_ok("send_message", send).await;
    assert_eq!(stored["body"], "order 4551", "the retry goes through");
    assert_eq!(agent.next("new_message").await["client_id"], "c-1");
    let page = agent
        .call_ok("sync", json!({ "workspaceId": server.ws, "after": 0 }))
        .await;
    assert_eq!(
        page["messages"].as_array().map(Vec::len),
        Some(1),
        "stored once: {page}"
    );
}
