//! The Twilio channel through the reference server: signed webhooks in (only valid
//! signatures pass), replies out through a local stand-in for Twilio's Messages API,
//! status callbacks, and the unread counts endpoint.

use std::sync::{Arc, Mutex};

use axum::extract::Form;
use livechat_core::sms::twilio::signature;
use reqwest::Method;
use rust_socketio::TransportType;
use serde_json::{Value, json};

use crate::harness::{ADMIN, TestServer};

const TOKEN: &str = "twilio-auth-token-for-tests";
const PUBLIC: &str = "https://chat.example.com";

type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// Twilio's Messages API as far as the server uses it: every request is taken.
async fn stand_in() -> (Seen, String) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{account}/Messages.json",
        axum::routing::post(move |Form(form): Form<Vec<(String, String)>>| {
            let record = record.clone();
            async move {
                let n = {
                    let mut seen = record.lock().unwrap();
                    seen.push(form);
                    seen.len()
                };
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(json!({ "sid": format!("SMout{n}"), "status": "queued" })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Posts a webhook as Twilio does, with `signature` as its `X-Twilio-Signature`.
async fn webhook(
    s: &TestServer,
    path: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> (u16, String) {
    let mut req = s.http.post(s.url(path)).form(params);
    if let Some(sig) = signature {
        req = req.header("X-Twilio-Signature", sig);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

fn signed(path: &str, params: &[(String, String)]) -> String {
    signature(TOKEN, &format!("{PUBLIC}{path}"), params)
}

#[tokio::test]
async fn twilio_webhooks_and_replies_work_end_to_end() {
    let (outbound, api) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("sms.db").display());
    let s = TestServer::start_on(
        &db,
        &[
            "--public-url",
            PUBLIC,
            "--twilio-account-sid",
            "ACtest",
            "--twilio-auth-token",
            TOKEN,
            "--twilio-api-base-url",
            &api,
        ],
    )
    .await;
    let (status, ws) = s
        .request(
            Method::POST,
            "/api/workspaces",
            Some(ADMIN),
            Some(json!({ "name": "SMS desk", "phone": "+18005550100" })),
        )
        .await;
    assert_eq!(status, 201, "{ws}");
    let ws_id = ws["id"].as_str().unwrap().to_owned();
    let (status, _) = s
        .request(
            Method::POST,
            &format!("/api/workspaces/{ws_id}/members"),
            Some(ADMIN),
            Some(json!({ "userId": "sam", "role": "agent" })),
        )
        .await;
    assert_eq!(status, 201);
    let mut sam = s.socket("sam", TransportType::Websocket).await;
    sam.call("join_workspace", json!({ "workspaceId": ws_id }))
        .await;

    // In: a signed webhook becomes an inbound message the agent gets at once.
    let path = "/webhooks/twilio/sms";
    let params = form(&[
        ("AccountSid", "ACtest"),
        ("MessageSid", "SMin0001"),
        ("From", "+15550007"),
        ("To", "+18005550100"),
        ("Body", "Where is my parcel?"),
        ("NumMedia", "0"),
    ]);
    let (status, body) = webhook(&s, path, &params, Some(&signed(path, &params))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Response>"), "empty TwiML: {body}");
    let got = sam.next("new_message").await;
    assert_eq!(got["body"], "Where is my parcel?");
    assert_eq!(got["twilio_sid"], "SMin0001");
    let contact_id = got["contact_id"].as_str().unwrap().to_owned();

    // Twilio retries: same message, no second delivery.
    let (status, _) = webhook(&s, path, &params, Some(&signed(path, &params))).await;
    assert_eq!(status, 200);

    // Only the valid signature passes.
    let mut tampered = params.clone();
    tampered[4].1 = "Send it to my neighbour".into();
    let (status, _) = webhook(&s, path, &tampered, Some(&signed(path, &params))).await;
    assert_eq!(status, 403, "a tampered parameter");
    let wrong_url = signature(TOKEN, &format!("http://{}{path}", s.addr), &params);
    let (status, _) = webhook(&s, path, &params, Some(&wrong_url)).await;
    assert_eq!(status, 403, "signed for another URL (the proxy's inside)");
    let (status, _) = webhook(&s, path, &params, None).await;
    assert_eq!(status, 403, "no signature");
    let forged = form(&[
        ("MessageSid", "SMforged"),
        ("From", "+15550666"),
        ("To", "+18005550100"),
        ("Body", "forged"),
    ]);
    let other_key = signature("another-token", &format!("{PUBLIC}{path}"), &forged);
    let (status, _) = webhook(&s, path, &forged, Some(&other_key)).await;
    assert_eq!(status, 403, "signed with another account's token");

    let agent = s.token("sam");
    let (status, page) = s
        .request(
            Method::GET,
            &format!("/api/contacts/{contact_id}/messages"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        1,
        "only the valid one: {page}"
    );

    // Unread counts over REST, for members only.
    let (status, counts) = s
        .request(
            Method::GET,
            &format!("/api/workspaces/{ws_id}/unread"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts["counts"], json!({ contact_id.clone(): 1 }));
    let (status, _) = s
        .request(
            Method::GET,
            &format!("/api/workspaces/{ws_id}/unread"),
            Some(&s.token("stranger")),
            None,
        )
        .await;
    assert_eq!(status, 403);

    // Out: the agent's SMS reply goes to the stand-in and comes back `sent`.
    let reply = sam
        .call(
            "send_message",
            json!({ "contactId": contact_id, "body": "Tomorrow by noon", "msgType": "sms" }),
        )
        .await;
    assert_eq!(reply["status"], "queued", "{reply}");
    let updated = sam.next("message_updated").await;
    assert_eq!(updated["status"], "sent");
    assert_eq!(updated["twilio_sid"], "SMout1");
    {
        let outbound = outbound.lock().unwrap();
        let field = |name: &str| {
            outbound[0]
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(field("To").as_deref(), Some("+15550007"));
        assert_eq!(field("From").as_deref(), Some("+18005550100"));
        assert_eq!(
            field("StatusCallback").as_deref(),
            Some("https://chat.example.com/webhooks/twilio/status")
        );
    }

    // Twilio's status callback moves it on; an unsigned one changes nothing.
    let path = "/webhooks/twilio/status";
    let report = form(&[("MessageSid", "SMout1"), ("MessageStatus", "delivered")]);
    let (status, _) = webhook(&s, path, &report, Some("bm9wZQ==")).await;
    assert_eq!(status, 403);
    let (status, body) = webhook(&s, path, &report, Some(&signed(path, &report))).await;
    assert_eq!(status, 204, "{body}");
    let updated: Value = sam.next("message_updated").await;
    assert_eq!(updated["status"], "delivered");
    s.stop().await;
}

#[tokio::test]
async fn without_twilio_settings_the_webhooks_are_not_there() {
    let s = TestServer::start().await;
    let params = form(&[
        ("MessageSid", "SM1"),
        ("From", "+1"),
        ("To", "+2"),
        ("Body", "x"),
    ]);
    let (status, _) = webhook(&s, "/webhooks/twilio/sms", &params, Some("x")).await;
    assert_eq!(status, 404);
    s.stop().await;
}
