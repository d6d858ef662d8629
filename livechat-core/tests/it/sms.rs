//! The SMS channel against a local stand-in for Twilio's Messages API (Twilio cannot
//! be reached from here): inbound messages, status reports, and the outbox — success,
//! a 5xx tried again with backoff, a 4xx failed at once, and a restart in the middle
//! of the tries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use livechat_core::model::{ContactId, Role, UserId, WorkspaceId};
use livechat_core::sms::twilio::TwilioGateway;
use livechat_core::sms::{InboundSms, SmsOutbox, SmsRetry};
use livechat_core::store::{NewContact, NewWorkspace, SqliteStore};
use livechat_core::{ChatError, Limits, LiveChat};
use serde_json::{Value, json};

use crate::harness::{Server, TestClient, WAIT};

/// A request the stand-in took: when, `account authorization`, and the form.
type Request = (Instant, String, Vec<(String, String)>);

/// What the stand-in answers, one status per request (the last one repeats).
#[derive(Clone, Default)]
struct StandIn {
    answers: Arc<Mutex<Vec<u16>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    /// How long each answer takes.
    delay: Arc<Mutex<Duration>>,
}

impl StandIn {
    async fn start(answers: &[u16]) -> (Self, String) {
        let stand_in = Self {
            answers: Arc::new(Mutex::new(answers.to_vec())),
            ..Self::default()
        };
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(messages),
            )
            .with_state(stand_in.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (stand_in, url)
    }

    fn answer_with(&self, answers: &[u16]) {
        *self.answers.lock().unwrap() = answers.to_vec();
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn messages(
    State(s): State<StandIn>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, axum::Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut requests = s.requests.lock().unwrap();
        requests.push((Instant::now(), format!("{account} {auth}"), form));
        requests.len()
    };
    let delay = *s.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let status = {
        let mut answers = s.answers.lock().unwrap();
        if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0]
        }
    };
    let body = match status {
        201 => json!({ "sid": format!("SMstandin{n}"), "status": "queued" }),
        400 => json!({ "code": 21211, "message": "The 'To' number is not a valid phone number." }),
        _ => json!({ "code": 20500, "message": "Internal Server Error" }),
    };
    (StatusCode::from_u16(status).unwrap(), axum::Json(body))
}

fn fast_retry() -> SmsRetry {
    let mut retry = SmsRetry::default();
    retry.first_delay = Duration::from_millis(200);
    retry.max_attempts = 3;
    retry.poll = Duration::from_millis(50);
    retry.send_timeout = Duration::from_secs(2);
    retry
}

/// A workspace with an SMS number, a contact with a phone, and alice as its agent.
async fn sms_workspace(chat: &LiveChat) -> (WorkspaceId, ContactId, String) {
    let ws = WorkspaceId::new_v4();
    let number = format!("+1800{}", &ws.0.simple().to_string()[..7]);
    chat.create_workspace(NewWorkspace {
        id: ws,
        name: "SMS team".into(),
        phone: Some(number.clone()),
    })
    .await
    .unwrap();
    let contact = ContactId::new_v4();
    chat.create_contact(NewContact {
        id: contact,
        workspace_id: ws,
        name: "Texter".into(),
        phone: Some("+15550123".into()),
    })
    .await
    .unwrap();
    chat.add_member(ws, UserId::from("alice"), Role::Agent)
        .await
        .unwrap();
    (ws, contact, number)
}

async fn agent(server: &Server, ws: WorkspaceId) -> TestClient {
    let c = server.connect("alice").await;
    c.call_ok("join_workspace", json!({ "workspaceId": ws }))
        .await;
    c
}

async fn reply(agent: &TestClient, contact: ContactId, body: &str) -> Value {
    agent
        .call_ok(
            "send_message",
            json!({ "contactId": contact, "body": body, "msgType": "sms" }),
        )
        .await
}

#[tokio::test]
async fn a_reply_goes_out_as_sms_and_is_marked_sent() {
    let (stand_in, api) = StandIn::start(&[201]).await;
    let server = Server::start().await;
    let (ws, contact, number) = sms_workspace(&server.chat).await;
    let gateway = TwilioGateway::new("ACtest", "secret-token", &api)
        .unwrap()
        .status_callback("https://chat.example.com/webhooks/twilio/status");
    let _outbox = SmsOutbox::start(server.chat.clone(), gateway, fast_retry());
    let mut alice = agent(&server, ws).await;

    let queued = reply(&alice, contact, "Your order shipped").await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["msg_type"], "sms");
    let updated = alice.next("message_updated").await;
    assert_eq!(updated["id"], queued["id"]);
    assert_eq!(updated["status"], "sent");
    assert_eq!(updated["twilio_sid"], "SMstandin1");

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1, "sent once");
    let (_, auth, form) = &requests[0];
    let basic = format!(
        "ACtest Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "ACtest:secret-token"
        )
    );
    assert_eq!(
        auth, &basic,
        "the account in the path, its credentials in basic auth"
    );
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("To"), Some("+15550123"));
    assert_eq!(field("From"), Some(number.as_str()));
    assert_eq!(field("Body"), Some("Your order shipped"));
    assert_eq!(
        field("StatusCallback"),
        Some("https://chat.example.com/webhooks/twilio/status")
    );

    // Twilio's status report moves it on.
    server
        .chat
        .sms_status("SMstandin1", "delivered")
        .await
        .unwrap()
        .expect("sent → delivered");
    assert_eq!(alice.next("message_updated").await["status"], "delivered");
    assert!(
        server
            .chat
            .sms_status("SMstandin1", "sent")
            .await
            .unwrap()
            .is_none(),
        "never back"
    );
    assert!(
        server
            .chat
            .sms_status("SMstandin1", "sending")
            .await
            .unwrap()
            .is_none()
    );
    match server.chat.sms_status("SMunknown", "delivered").await {
        Err(ChatError::NotFound(_)) => {}
        other => panic!("a report for no message: {other:?}"),
    }
}

#[tokio::test]
async fn a_server_error_is_tried_again_with_backoff_and_a_refusal_fails_at_once() {
    let (stand_in, api) = StandIn::start(&[500, 503, 201]).await;
    let server = Server::start().await;
    let (ws, contact, _) = sms_workspace(&server.chat).await;
    let gateway = TwilioGateway::new("ACtest", "secret-token", &api).unwrap();
    let _outbox = SmsOutbox::start(server.chat.clone(), gateway, fast_retry());
    let mut alice = agent(&server, ws).await;

    let queued = reply(&alice, contact, "third time lucky").await;
    let updated = alice.next("message_updated").await;
    assert_eq!(
        (updated["id"].clone(), updated["status"].as_str()),
        (queued["id"].clone(), Some("sent"))
    );
    let times: Vec<Instant> = stand_in.requests().iter().map(|r| r.0).collect();
    assert_eq!(times.len(), 3, "two failures, then success");
    let (first_wait, second_wait) = (times[1] - times[0], times[2] - times[1]);
    eprintln!("sms retries: waited {first_wait:?}, then {second_wait:?}");
    assert!(
        first_wait >= Duration::from_millis(200),
        "backoff: {first_wait:?}"
    );
    assert!(
        second_wait >= Duration::from_millis(400),
        "it doubles: {second_wait:?}"
    );

    // A 4xx is final: failed after one try.
    stand_in.answer_with(&[400]);
    let queued = reply(&alice, contact, "to a bad number").await;
    let updated = alice.next("message_updated").await;
    assert_eq!(
        (updated["id"].clone(), updated["status"].as_str()),
        (queued["id"].clone(), Some("failed"))
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(stand_in.requests().len(), 4, "never tried again");

    // Server errors up to the last try: failed.
    stand_in.answer_with(&[502]);
    reply(&alice, contact, "never").await;
    let updated = alice.next("message_updated").await;
    assert_eq!(updated["status"], "failed");
    assert_eq!(stand_in.requests().len(), 4 + 3, "max_attempts tries");
}

#[tokio::test]
async fn queued_sms_survive_a_restart_in_the_middle_of_the_tries() {
    let (stand_in, api) = StandIn::start(&[503]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sms.db").display());
    let mut retry = fast_retry();
    retry.first_delay = Duration::from_millis(300);

    let store = SqliteStore::open(&url).await.unwrap();
    let server = Server::start_with(store.clone(), Limits::default()).await;
    let (ws, contact, _) = sms_workspace(&server.chat).await;
    let gateway = TwilioGateway::new("ACtest", "secret-token", &api).unwrap();
    let outbox = SmsOutbox::start(server.chat.clone(), gateway, retry.clone());
    let alice = agent(&server, ws).await;
    let queued = reply(&alice, contact, "across a restart").await;
    let deadline = Instant::now() + WAIT;
    while stand_in.requests().is_empty() {
        assert!(Instant::now() < deadline, "the first try never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The process goes away between two tries.
    outbox.stop();
    alice.close().await;
    server.chat.close().await;
    store.close().await;

    stand_in.answer_with(&[201]);
    let store = SqliteStore::open(&url).await.unwrap();
    let server = Server::start_with(store.clone(), Limits::default()).await;
    let gateway = TwilioGateway::new("ACtest", "secret-token", &api).unwrap();
    let _outbox = SmsOutbox::start(server.chat.clone(), gateway, retry);
    let deadline = Instant::now() + WAIT;
    let sent = loop {
        let page = server
            .chat
            .sync(
                &livechat_core::auth::Identity {
                    user_id: UserId::from("alice"),
                    expires_at: None,
                    workspaces: None,
                },
                serde_json::from_value(json!({ "contactId": contact, "after": 0 })).unwrap(),
            )
            .await
            .unwrap();
        let m = page
            .messages
            .into_iter()
            .find(|m| m.id.to_string() == queued["id"])
            .unwrap();
        if m.status == livechat_core::model::Status::Sent {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "never sent after the restart: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        stand_in.requests().len(),
        2,
        "one try before, one after the restart"
    );
    assert_eq!(sent.twilio_sid.as_deref(), Some("SMstandin2"));
    store.close().await;
}

#[tokio::test]
async fn sms_is_refused_without_a_channel_or_a_number() {
    let server = Server::start().await;
    let (ws, contact, _) = sms_workspace(&server.chat).await;
    let alice = agent(&server, ws).await;
    let refused = alice
        .call_err(
            "send_message",
            json!({ "contactId": contact, "body": "x", "msgType": "sms" }),
            "invalid_payload",
        )
        .await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("no SMS channel"),
        "{refused}"
    );

    let (_, api) = StandIn::start(&[201]).await;
    let gateway = TwilioGateway::new("ACtest", "secret-token", &api).unwrap();
    let _outbox = SmsOutbox::start(server.chat.clone(), gateway, fast_retry());
    let no_phone = ContactId::new_v4();
    server
        .chat
        .create_contact(NewContact {
            id: no_phone,
            workspace_id: ws,
            name: "Web visitor".into(),
            phone: None,
        })
        .await
        .unwrap();
    let refused = alice
        .call_err(
            "send_message",
            json!({ "contactId": no_phone, "body": "x", "msgType": "sms" }),
            "invalid_payload",
        )
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("phone"),
        "{refused}"
    );
}

#[tokio::test]
async fn inbound_sms_reach_agents_at_once_and_retries_store_nothing_new() {
    let server = Server::start().await;
    let (ws, _, number) = sms_workspace(&server.chat).await;
    let mut alice = agent(&server, ws).await;
    let first = server
        .chat
        .receive_sms(InboundSms::new(
            "SMin1",
            "+15559876",
            &number,
            "Hi, is my order late?",
        ))
        .await
        .unwrap();
    let got = alice.next("new_message").await;
    assert_eq!(got["id"], json!(first.id));
    assert_eq!(
        (
            got["direction"].as_str(),
            got["msg_type"].as_str(),
            got["status"].as_str()
        ),
        (Some("inbound"), Some("sms"), Some("received"))
    );
    assert_eq!(got["twilio_sid"], "SMin1");
    assert_eq!(got["sender"], "+15559876");

    // Twilio delivers the same message again: the same message, delivered once.
    let again = server
        .chat
        .receive_sms(InboundSms::new(
            "SMin1",
            "+15559876",
            &number,
            "Hi, is my order late?",
        ))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    alice.none("new_message", Duration::from_millis(300)).await;

    // A second message from the number lands in the same conversation.
    let second = server
        .chat
        .receive_sms(InboundSms::new("SMin2", "+15559876", &number, "hello?"))
        .await
        .unwrap();
    assert_eq!(second.contact_id, first.contact_id);
    assert_eq!(second.seq, first.seq + 1);
    let contact = server
        .chat
        .contact(first.contact_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.phone.as_deref(), Some("+15559876"));

    match server
        .chat
        .receive_sms(InboundSms::new("SMin3", "+15559876", "+19999999", "lost?"))
        .await
    {
        Err(ChatError::NotFound(_)) => {}
        other => panic!("an SMS to no workspace's number: {other:?}"),
    }
}

#[tokio::test]
async fn sms_waiting_for_a_slot_are_never_sent_twice() {
    // One slot, answers that take 600 ms, a 1 s send timeout, three SMS: the third
    // waits 1.2 s for the slot. Its claim must not run out meanwhile, or it would be
    // claimed and sent again.
    let (stand_in, api) = StandIn::start(&[201]).await;
    *stand_in.delay.lock().unwrap() = Duration::from_millis(600);
    let server = Server::start().await;
    let (ws, contact, _) = sms_workspace(&server.chat).await;
    let mut retry = fast_retry();
    retry.concurrency = 1;
    retry.send_timeout = Duration::from_secs(1);
    let gateway = TwilioGateway::new("ACtest", "secret-token", &api).unwrap();
    let _outbox = SmsOutbox::start(server.chat.clone(), gateway, retry);
    let mut alice = agent(&server, ws).await;
    for body in ["one", "two", "three"] {
        reply(&alice, contact, body).await;
    }
    let sent = alice
        .take("message_updated", 3, Duration::from_secs(10))
        .await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.iter().all(|m| m["status"] == "sent"), "{sent:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bodies: Vec<String> = stand_in
        .requests()
        .iter()
        .filter_map(|(_, _, form)| {
            form.iter()
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        bodies,
        ["one", "two", "three"],
        "each SMS sent once, in order"
    );
}
