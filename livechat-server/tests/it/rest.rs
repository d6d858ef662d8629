//! The HTTP API of DESIGN.md, and its agreement with the socket events.

use reqwest::Method;
use rust_socketio::TransportType;
use serde_json::{Value, json};

use crate::harness::{ADMIN, TestServer};

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let s = TestServer::start().await;
    let (status, body) = s
        .request(
            Method::POST,
            "/api/workspaces",
            None,
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let agent = s.token("someone");
    let (status, _) = s
        .request(
            Method::POST,
            "/api/workspaces",
            Some(&agent),
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(status, 401, "a member JWT is not the admin token");
    let (status, _) = s
        .request(
            Method::POST,
            "/api/workspaces",
            Some("admin-token-for-tests-onlY"),
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(status, 401);
    s.stop().await;
}

#[tokio::test]
async fn a_workspace_is_set_up_and_used_over_rest_and_sockets() {
    let s = TestServer::start().await;
    let (status, ws) = s
        .request(
            Method::POST,
            "/api/workspaces",
            Some(ADMIN),
            Some(json!({ "name": "Acme", "phone": "+15550100" })),
        )
        .await;
    assert_eq!(status, 201, "{ws}");
    assert_eq!(ws["name"], "Acme");
    let ws_id = ws["id"].as_str().unwrap().to_owned();

    let (status, m) = s
        .request(
            Method::POST,
            &format!("/api/workspaces/{ws_id}/members"),
            Some(ADMIN),
            Some(json!({ "userId": "carol", "role": "agent" })),
        )
        .await;
    assert_eq!(status, 201, "{m}");

    // A member may create contacts in their workspace; a stranger may not.
    let carol = s.token("carol");
    let (status, contact) = s
        .request(
            Method::POST,
            &format!("/api/workspaces/{ws_id}/contacts"),
            Some(&carol),
            Some(json!({ "name": "Dan", "phone": "+15550111" })),
        )
        .await;
    assert_eq!(status, 201, "{contact}");
    assert_eq!(contact["workspace_id"], ws_id.as_str());
    let contact_id = contact["id"].as_str().unwrap().to_owned();
    let stranger = s.token("mallory");
    let (status, body) = s
        .request(
            Method::POST,
            &format!("/api/workspaces/{ws_id}/contacts"),
            Some(&stranger),
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // REST send reaches a socket in the workspace room.
    let mut socket = s.socket("carol", TransportType::Websocket).await;
    socket
        .call("join_workspace", json!({ "workspaceId": ws_id }))
        .await;
    let (status, sent) = s
        .request(
            Method::POST,
            &format!("/api/contacts/{contact_id}/messages"),
            Some(&carol),
            Some(json!({ "body": "hi over REST", "clientId": "r-1" })),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(socket.next("new_message").await, sent);
    let (_, again) = s
        .request(
            Method::POST,
            &format!("/api/contacts/{contact_id}/messages"),
            Some(&carol),
            Some(json!({ "body": "hi over REST", "clientId": "r-1" })),
        )
        .await;
    assert_eq!(
        again, sent,
        "a REST retry with the same clientId returns the original"
    );

    // REST history agrees with socket history, page by page.
    for i in 0..24 {
        socket
            .call(
                "send_message",
                json!({ "contactId": contact_id, "body": format!("s{i}") }),
            )
            .await;
    }
    let mut before: Option<i64> = None;
    let mut pages = 0;
    loop {
        let query = match before {
            Some(b) => format!("?limit=10&before={b}"),
            None => "?limit=10".to_owned(),
        };
        let (status, rest_page) = s
            .request(
                Method::GET,
                &format!("/api/contacts/{contact_id}/messages{query}"),
                Some(&carol),
                None,
            )
            .await;
        assert_eq!(status, 200);
        let socket_page = socket
            .call(
                "history",
                json!({ "contactId": contact_id, "before": before, "limit": 10 }),
            )
            .await;
        assert_eq!(rest_page, socket_page, "REST and socket history agree");
        pages += 1;
        before = rest_page["messages"]
            .as_array()
            .unwrap()
            .last()
            .and_then(|m| m["seq"].as_i64());
        if rest_page["has_more"] == false {
            break;
        }
    }
    assert_eq!(pages, 3, "25 messages in pages of 10");
    let (_, synced) = s
        .request(
            Method::GET,
            &format!("/api/contacts/{contact_id}/messages?after=20"),
            Some(&carol),
            None,
        )
        .await;
    let seqs: Vec<i64> = synced["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [21, 22, 23, 24, 25]);

    // Removing the member cuts REST access too.
    let (status, _) = s
        .request(
            Method::DELETE,
            &format!("/api/workspaces/{ws_id}/members/carol"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .request(
            Method::GET,
            &format!("/api/contacts/{contact_id}/messages"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .request(
            Method::DELETE,
            &format!("/api/workspaces/{ws_id}/members/carol"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn bad_rest_input_gets_a_clear_error() {
    let s = TestServer::start().await;
    let demo = s.demo().clone();
    let agent = s.token("demo-agent");
    let c = demo.contact_id;
    /// method, path, bearer, body, expected status, expected code
    type Case<'a> = (Method, String, Option<&'a str>, Option<Value>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            format!("/api/contacts/{c}/messages"),
            Some(&agent),
            Some(json!({ "body": "" })),
            400,
            "invalid_payload",
        ),
        (
            Method::POST,
            format!("/api/contacts/{c}/messages"),
            Some(&agent),
            Some(json!({ "nobody": 1 })),
            400,
            "invalid_payload",
        ),
        (
            Method::POST,
            format!("/api/contacts/{c}/messages"),
            Some(&agent),
            Some(json!({ "body": "x".repeat(20_000) })),
            413,
            "payload_too_large",
        ),
        (
            Method::POST,
            "/api/contacts/not-a-uuid/messages".into(),
            Some(&agent),
            Some(json!({ "body": "x" })),
            400,
            "invalid_payload",
        ),
        (
            Method::POST,
            format!("/api/contacts/{}/messages", uuid::Uuid::new_v4()),
            Some(&agent),
            Some(json!({ "body": "x" })),
            404,
            "not_found",
        ),
        (
            Method::GET,
            format!("/api/contacts/{c}/messages?before=1&after=2"),
            Some(&agent),
            None,
            400,
            "invalid_payload",
        ),
        (
            Method::GET,
            format!("/api/contacts/{c}/messages?limit=-1"),
            Some(&agent),
            None,
            400,
            "invalid_payload",
        ),
        (
            Method::POST,
            "/api/workspaces".into(),
            Some(ADMIN),
            Some(json!({ "name": "" })),
            400,
            "invalid_payload",
        ),
        (
            Method::POST,
            format!("/api/workspaces/{}/contacts", uuid::Uuid::new_v4()),
            Some(ADMIN),
            Some(json!({ "name": "x" })),
            404,
            "not_found",
        ),
        (
            Method::POST,
            format!("/api/workspaces/{}/members", demo.workspace_id),
            Some(ADMIN),
            Some(json!({ "userId": "x", "role": "owner" })),
            400,
            "invalid_payload",
        ),
        (
            Method::GET,
            "/api/nope".into(),
            None,
            None,
            404,
            "not_found",
        ),
    ];
    for (method, path, bearer, body, status, code) in cases {
        let (got_status, got) = s.request(method.clone(), &path, bearer, body).await;
        assert_eq!(
            (got_status, got["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {got}"
        );
        assert!(
            got["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{got}"
        );
    }
    // A body over the frame limit is refused before it is read whole.
    let (status, _) = s
        .request(
            Method::POST,
            &format!("/api/contacts/{c}/messages"),
            Some(&agent),
            Some(json!({ "body": "x".repeat(2 << 20) })),
        )
        .await;
    assert_eq!(status, 413);
    let (status, _) = s.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200, "still serving");
    s.stop().await;
}

#[tokio::test]
async fn probes_answer() {
    let s = TestServer::start().await;
    let (status, body) = s.request(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = s.request(Method::GET, "/readyz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    s.stop().await;
}

#[tokio::test]
async fn messages_and_the_demo_survive_a_restart_on_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("restart.db").display());
    let s = TestServer::start_on(&db, &[]).await;
    let demo = s.demo().clone();
    let agent = s.token("demo-agent");
    let unread = format!("/api/workspaces/{}/unread", demo.workspace_id);
    let (_, unread_before) = s.request(Method::GET, &unread, Some(&agent), None).await;
    assert_eq!(
        unread_before["counts"],
        json!({ demo.contacts[1].to_string(): 2, demo.contacts[2].to_string(): 1 }),
        "the demo's inbound messages, not read yet"
    );
    let (_, sent) = s
        .request(
            Method::POST,
            &format!("/api/contacts/{}/messages", demo.contact_id),
            Some(&agent),
            Some(json!({ "body": "durable", "clientId": "d-1" })),
        )
        .await;
    s.stop().await;

    let s = TestServer::start_on(&db, &[]).await;
    assert_eq!(
        s.demo().workspace_id,
        demo.workspace_id,
        "the demo is found again, not made anew"
    );
    let (_, page) = s
        .request(
            Method::GET,
            &format!("/api/contacts/{}/messages", demo.contact_id),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(page["messages"], json!([sent]));
    let (_, unread_again) = s.request(Method::GET, &unread, Some(&agent), None).await;
    assert_eq!(
        unread_again, unread_before,
        "the demo's inbound messages are written once, not at every start"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_member_lists_the_workspace_contacts() {
    let s = TestServer::start().await;
    let demo = s.demo().clone();
    let path = format!("/api/workspaces/{}/contacts", demo.workspace_id);
    let agent = s.token("demo-agent");

    let (status, list) = s.request(Method::GET, &path, Some(&agent), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["workspace_id"], json!(demo.workspace_id));
    assert_eq!(list["has_more"], false);
    let contacts = list["contacts"].as_array().unwrap();
    let names: Vec<&str> = contacts
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Jonas Weber", "Maya Chen", "Priya Shah"], "by name");
    let mut ids: Vec<Value> = contacts.iter().map(|c| c["id"].clone()).collect();
    ids.sort_by_key(|id| id.to_string());
    let mut demo_ids: Vec<Value> = demo.contacts.iter().map(|c| json!(c)).collect();
    demo_ids.sort_by_key(|id| id.to_string());
    assert_eq!(ids, demo_ids);
    let jonas = &contacts[0];
    for field in ["id", "workspace_id", "name", "phone", "created_at"] {
        assert!(jonas.get(field).is_some(), "missing {field}: {jonas}");
    }
    assert_eq!(jonas["phone"], "+15550142");
    assert_eq!(jonas["workspace_id"], json!(demo.workspace_id));

    let (status, page) = s
        .request(Method::GET, &format!("{path}?limit=2"), Some(&agent), None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["contacts"], json!(contacts[..2]));
    assert_eq!(page["has_more"], true);
    let (status, _) = s
        .request(
            Method::GET,
            &format!("{path}?limit=500"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(status, 200, "the largest limit is allowed");

    let stranger = s.token("mallory");
    for (bearer, query, status, code) in [
        (Some(stranger.as_str()), "", 403, "forbidden"),
        (None, "", 401, "unauthorized"),
        (Some(agent.as_str()), "?limit=501", 400, "invalid_payload"),
        (Some(agent.as_str()), "?limit=0", 400, "invalid_payload"),
        (Some(agent.as_str()), "?limit=many", 400, "invalid_payload"),
    ] {
        let (got, body) = s
            .request(Method::GET, &format!("{path}{query}"), bearer, None)
            .await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "GET {path}{query}: {body}"
        );
    }
    let (_, body) = s
        .request(
            Method::GET,
            &format!("{path}?limit=501"),
            Some(&agent),
            None,
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("500")),
        "the refusal says the bound: {body}"
    );
    let (status, _) = s
        .request(
            Method::GET,
            &format!("/api/workspaces/{}/contacts", uuid::Uuid::new_v4()),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(status, 403, "another workspace: not a member");
    s.stop().await;
}
