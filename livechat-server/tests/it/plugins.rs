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

    // The demo contact's conversation: the demo's other contacts have messages of
    // their own.
    let page = agent
        .call("sync", json!({ "contactId": demo.contact_id, "after": 0 }))
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

/// An operator's own plugin, loaded by path with its configuration file: the template
/// plugin of plugins/README.md, told to refuse "unsubscribe", as the guide's step 4 runs it.
#[tokio::test]
async fn a_plugin_loaded_by_path_gets_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    // The template as its author has it after building it: a `.wasm` file on disk.
    // livechat-plugins' build script builds it and embeds its bytes.
    let wasm = dir.path().join("no_unsubscribe.wasm");
    std::fs::write(&wasm, livechat_plugins::bundled::TEMPLATE).unwrap();
    let config = dir.path().join("no_unsubscribe.txt");
    std::fs::write(&config, "unsubscribe\n").unwrap();
    let configs = format!("no_unsubscribe={}", config.display());
    let s = TestServer::start_on_temp(&[
        "--plugin-paths",
        wasm.to_str().unwrap(),
        "--plugin-configs",
        &configs,
    ])
    .await;
    let demo = s.demo().clone();
    let sender = s.socket("demo-agent", TransportType::Websocket).await;
    let mut watcher = s.socket("demo-agent", TransportType::Websocket).await;
    for socket in [&sender, &watcher] {
        socket
            .call(
                "join_workspace",
                json!({ "workspaceId": demo.workspace_id }),
            )
            .await;
    }
    let c = json!(demo.contact_id);

    let refused = sender
        .call_raw(
            "send_message",
            json!({ "contactId": c, "body": "please UNSUBSCRIBE me" }),
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "rejected", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages may not contain \"unsubscribe\""),
        "the configured word is the reason: {refused}"
    );
    // The bundled plugins still run before it.
    let kept = sender
        .call(
            "send_message",
            json!({ "contactId": c, "body": "<b>hello</b> there" }),
        )
        .await;
    assert_eq!(kept["body"], "hello there");

    let seen = watcher.take("new_message", 1, crate::harness::WAIT).await;
    let bodies: Vec<&str> = seen.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        ["hello there"],
        "the refused message was never broadcast"
    );
    s.stop().await;
}

/// The template refuses an empty configuration, so without `--plugin-configs` the server
/// stops at start with the plugin's own reason instead of running it unconfigured.
#[tokio::test]
async fn a_plugin_loaded_by_path_without_its_configuration_stops_the_start() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("no_unsubscribe.wasm");
    std::fs::write(&wasm, livechat_plugins::bundled::TEMPLATE).unwrap();
    let db = format!("sqlite://{}", dir.path().join("livechat.db").display());
    let config = livechat_server::Config::parse_from([
        "livechat-server",
        "--database-url",
        &db,
        "--plugins",
        "none",
        "--plugin-paths",
        wasm.to_str().unwrap(),
    ]);
    let err = livechat_server::build(&config).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("configure me with the word to refuse"),
        "{err:#}"
    );
}
