//! Both examples, served on 127.0.0.1:0 and used by a real Socket.IO client.

#[path = "../axum.rs"]
#[expect(
    dead_code,
    reason = "the example's main is for `cargo run`; the test uses its app"
)]
mod axum_example;
#[path = "../hyper.rs"]
#[expect(
    dead_code,
    reason = "the example's main is for `cargo run`; the test uses its service"
)]
mod hyper_example;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use livechat_core::LiveChat;
use livechat_core::auth::Claims;
use livechat_core::model::{ContactId, Role, UserId, WorkspaceId};
use livechat_core::store::{NewContact, NewWorkspace};
use rust_socketio::asynchronous::ClientBuilder;
use rust_socketio::{Event, Payload};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const SECRET: &[u8] = b"example-secret-example-secret-example";

async fn seed(chat: &LiveChat) -> (WorkspaceId, ContactId) {
    let ws = WorkspaceId::new_v4();
    chat.create_workspace(NewWorkspace {
        id: ws,
        name: "w".into(),
        phone: None,
    })
    .await
    .unwrap();
    let contact = ContactId::new_v4();
    chat.create_contact(NewContact {
        id: contact,
        workspace_id: ws,
        name: "c".into(),
        phone: None,
    })
    .await
    .unwrap();
    chat.add_member(ws, UserId::from("agent"), Role::Agent)
        .await
        .unwrap();
    (ws, contact)
}

/// Connects, joins the workspace, sends one message and returns what arrived.
async fn round_trip(url: String, ws: WorkspaceId, contact: ContactId) -> Value {
    let token = Claims::new("agent", chrono::Duration::minutes(5))
        .sign_hs256(SECRET)
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Value)>();
    let connected = tx.clone();
    let client = ClientBuilder::new(url)
        .auth(json!({ "token": token }))
        .on(Event::Connect, move |_, _| {
            let _ = connected.send(("connect".into(), Value::Null));
            async {}.boxed()
        })
        .on_any(move |e, p, _| {
            if let Payload::Text(mut v) = p {
                let _ = tx.send((e.to_string(), v.remove(0)));
            }
            async {}.boxed()
        })
        .connect()
        .await
        .unwrap();
    let mut next = async |name: &str| loop {
        let (e, v) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` within 5 s"))
            .unwrap();
        if e == name {
            return v;
        }
    };
    next("connect").await;
    let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
    let ack_tx = Arc::new(Mutex::new(Some(ack_tx)));
    client
        .emit("join_workspace", json!({ "workspaceId": ws }))
        .await
        .unwrap();
    client
        .emit_with_ack(
            "send_message",
            json!({ "contactId": contact, "body": "embedded" }),
            Duration::from_secs(5),
            move |p, _| {
                if let (Payload::Text(v), Some(tx)) = (p, ack_tx.lock().unwrap().take()) {
                    let _ = tx.send(v);
                }
                async {}.boxed()
            },
        )
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(5), ack_rx)
        .await
        .expect("no ack")
        .unwrap();
    assert_eq!(ack[0][0]["ok"], true, "{ack:?}");
    next("new_message").await
}

#[tokio::test]
async fn axum_example_serves_its_own_routes_and_livechat() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("embedded.db").display());
    let (app, chat) = axum_example::app(SECRET, &url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let own = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(own, "the host's own page");
    let (ws, contact) = seed(&chat).await;
    let got = round_trip(format!("http://{addr}"), ws, contact).await;
    assert_eq!(got["body"], "embedded");
}

#[tokio::test]
async fn hyper_example_serves_livechat_and_404s_the_rest() {
    let (svc, chat) = hyper_example::service(SECRET);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hyper_example::serve(listener, svc));

    let status = reqwest::get(format!("http://{addr}/elsewhere"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let (ws, contact) = seed(&chat).await;
    let got = round_trip(format!("http://{addr}"), ws, contact).await;
    assert_eq!(got["body"], "embedded");
}
