//! The bundled plugins, loaded by the server with no extra step, end to end through a
//! real client: rejected, rewritten, flagged.

use rust_socketio::TransportType;
use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn sanitize_and_moderation_decide_what_agents_see() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("moderation.json");
    std::fs::write(
        &config,
        r#"{ "default": { "block": ["free money"], "flag": ["refund"] } }"#,
    )
    .unwrap();
    let s = TestServer::start_on_temp(&["--moderation-config", config.to_str().unwrap()]).await;
    let demo = s.demo().clone();
    let mut agent = s.socket("demo-agent", TransportType::Websocket).await;
    agent
        .call(
            "join_workspace",
            json!({ "workspaceId": demo.workspace_id }),
        )
        .await;
    let c = json!(demo.contact_id);

    let refused = agent
        .call_raw(
            "send_message",
            json!({ "contactId": c, "body": "f.r.e.e m0ney here" }),
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "rejected");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocked term"),
        "{refused}"
    );

    let rewritten = agent
        .call(
            "send_message",
            json!({ "contactId": c, "body": "<script>alert(1)</script>hi <b>there</b>" }),
        )
        .await;
    assert_eq!(rewritten["body"], "hi there");
    let delivered = agent.next("new_message").await;
    assert_eq!(delivered["body"], "hi there", "delivered as stored");

    let flagged = agent
        .call(
            "send_message",
            json!({ "contactId": c, "body": "I want a refund" }),
        )
        .await;
    assert_eq!(flagged["moderation_flag"], "moderation: term \"refund\"");
    assert_eq!(
        agent.next("new_message").await["moderation_flag"],
        "moderation: term \"refund\""
    );

    let page = agent
        .call(
            "sync",
            json!({ "workspaceId": demo.workspace_id, "after": 0 }),
        )
        .await;
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["hi there", "I want a refund"],
        "the rejected message was never stored"
    );
    s.stop().await;
}

#[tokio::test]
async fn plugins_can_be_turned_off() {
    let s = TestServer::start_on_temp(&["--plugins", "none"]).await;
    let demo = s.demo().clone();
    let agent = s.socket("demo-agent", TransportType::Websocket).await;
    let m = agent
        .call(
            "send_message",
            json!({ "contactId": demo.contact_id, "body": "<b>raw</b>" }),
        )
        .await;
    assert_eq!(
        m["body"], "<b>raw</b>",
        "without sanitize, the body is stored as sent"
    );
    s.stop().await;
}
