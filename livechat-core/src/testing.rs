//! The storage conformance suite (feature `test-util`): one set of checks, run
//! against every [`Store`] implementation — the bundled ones and yours.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! livechat_core::testing::conformance(livechat_core::store::MemoryStore::new()).await;
//! # }
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;

use crate::error::StoreError;
use crate::model::{
    ContactId, Direction, MessageId, MsgType, NewMessage, Reaction, Role, Status, UserId,
    WorkspaceId,
};
use crate::store::{Appended, NewContact, NewWorkspace, Store, SyncScope, Toggled};

/// Runs every check on `store`, panicking with a description at the first failure.
/// Each check works in workspaces of its own, so the store may hold other data.
pub async fn conformance<S: Store>(store: S) {
    let store = Arc::new(store);
    directory(&*store).await;
    contact_lists(&*store).await;
    append_assigns_seq_per_workspace(&*store).await;
    append_is_idempotent(&*store).await;
    append_refuses_a_foreign_contact(&*store).await;
    history_pages(&*store).await;
    sync_after(&*store).await;
    mark_read(&*store).await;
    unread_counts(&*store).await;
    reactions(&*store).await;
    status_updates(&*store).await;
    sms_outbox(&*store).await;
    phones(&*store).await;
    batch(&*store).await;
    batch_across_workspaces(&*store).await;
    large_batch(&*store).await;
    racing_retries_store_once(store).await;
}

/// A fresh workspace with one contact.
pub async fn workspace_with_contact(store: &impl Store) -> (WorkspaceId, ContactId) {
    let ws = WorkspaceId::new_v4();
    store
        .create_workspace(NewWorkspace {
            id: ws,
            name: "Acme".into(),
            phone: None,
        })
        .await
        .expect("create_workspace");
    let contact = ContactId::new_v4();
    store
        .create_contact(NewContact {
            id: contact,
            workspace_id: ws,
            name: "Ada".into(),
            phone: Some("+15550001".into()),
        })
        .await
        .expect("create_contact");
    (ws, contact)
}

/// A message for `contact` with an optional idempotency key.
pub fn new_message(
    ws: WorkspaceId,
    contact: ContactId,
    body: &str,
    key: Option<&str>,
) -> NewMessage {
    NewMessage {
        id: MessageId::new_v4(),
        contact_id: contact,
        workspace_id: ws,
        sender: Some("agent-1".into()),
        body: body.into(),
        direction: Direction::Outbound,
        status: Status::Sent,
        twilio_sid: None,
        msg_type: MsgType::Text,
        client_id: key.map(str::to_owned),
        created_at: Utc::now(),
        moderation_flag: None,
    }
}

async fn directory(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let w = store
        .workspace(ws)
        .await
        .unwrap()
        .expect("workspace is found");
    assert_eq!(w.name, "Acme");
    assert!(
        store
            .workspace(WorkspaceId::new_v4())
            .await
            .unwrap()
            .is_none()
    );
    let c = store
        .contact(contact)
        .await
        .unwrap()
        .expect("contact is found");
    assert_eq!((c.workspace_id, c.name.as_str()), (ws, "Ada"));
    assert!(store.contact(ContactId::new_v4()).await.unwrap().is_none());

    let dup = store
        .create_workspace(NewWorkspace {
            id: ws,
            name: "again".into(),
            phone: None,
        })
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(_))),
        "duplicate workspace id: {dup:?}"
    );
    let orphan = store
        .create_contact(NewContact {
            id: ContactId::new_v4(),
            workspace_id: WorkspaceId::new_v4(),
            name: "x".into(),
            phone: None,
        })
        .await;
    assert!(
        matches!(orphan, Err(StoreError::NotFound(_))),
        "contact without workspace: {orphan:?}"
    );

    let user = UserId::from("agent-7");
    assert_eq!(store.member_role(ws, &user).await.unwrap(), None);
    store
        .add_member(ws, user.clone(), Role::Agent)
        .await
        .unwrap();
    assert_eq!(
        store.member_role(ws, &user).await.unwrap(),
        Some(Role::Agent)
    );
    store
        .add_member(ws, user.clone(), Role::Admin)
        .await
        .unwrap();
    assert_eq!(
        store.member_role(ws, &user).await.unwrap(),
        Some(Role::Admin),
        "role is updated"
    );
    let (other_ws, _) = workspace_with_contact(store).await;
    assert_eq!(
        store.member_role(other_ws, &user).await.unwrap(),
        None,
        "membership is per workspace"
    );
    assert!(store.remove_member(ws, &user).await.unwrap());
    assert!(!store.remove_member(ws, &user).await.unwrap());
    assert_eq!(store.member_role(ws, &user).await.unwrap(), None);
}

async fn append_assigns_seq_per_workspace(store: &impl Store) {
    let (a, ca) = workspace_with_contact(store).await;
    let (b, cb) = workspace_with_contact(store).await;
    for i in 1..=3 {
        let m = store.append(new_message(a, ca, "a", None)).await.unwrap();
        assert!(matches!(m, Appended::Inserted(_)));
        assert_eq!(m.message().seq, i, "seq counts up per workspace from 1");
    }
    let m = store.append(new_message(b, cb, "b", None)).await.unwrap();
    assert_eq!(m.message().seq, 1, "another workspace has its own counter");
    assert!(!m.message().is_read);

    let mut flagged = new_message(b, cb, "flagged", None);
    flagged.moderation_flag = Some("links: too many".into());
    let stored = store.append(flagged).await.unwrap().into_message();
    let page = store.sync(SyncScope::Workspace(b), 1, 10).await.unwrap();
    assert_eq!(
        page.messages,
        vec![stored],
        "every field round-trips, the flag included"
    );
    assert_eq!(
        page.messages[0].moderation_flag.as_deref(),
        Some("links: too many")
    );
}

async fn append_is_idempotent(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let first = store
        .append(new_message(ws, contact, "hello", Some("k1")))
        .await
        .unwrap();
    let Appended::Inserted(first) = first else {
        panic!("first append must insert")
    };
    let again = store
        .append(new_message(ws, contact, "hello (retry)", Some("k1")))
        .await
        .unwrap();
    assert_eq!(
        again,
        Appended::Duplicate(first.clone()),
        "a retry returns the original"
    );
    let next = store
        .append(new_message(ws, contact, "next", Some("k2")))
        .await
        .unwrap();
    assert_eq!(
        next.message().seq,
        first.seq + 1,
        "a duplicate consumes no seq"
    );
    // No key, no deduplication.
    let x = store
        .append(new_message(ws, contact, "same", None))
        .await
        .unwrap();
    let y = store
        .append(new_message(ws, contact, "same", None))
        .await
        .unwrap();
    assert!(matches!(
        (&x, &y),
        (Appended::Inserted(_), Appended::Inserted(_))
    ));
    // Keys are scoped to the workspace.
    let (other, oc) = workspace_with_contact(store).await;
    let z = store
        .append(new_message(other, oc, "hello", Some("k1")))
        .await
        .unwrap();
    assert!(
        matches!(z, Appended::Inserted(_)),
        "the same key in another workspace is new"
    );
}

async fn append_refuses_a_foreign_contact(store: &impl Store) {
    let (a, _) = workspace_with_contact(store).await;
    let (_, cb) = workspace_with_contact(store).await;
    let r = store.append(new_message(a, cb, "x", None)).await;
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "contact of another workspace: {r:?}"
    );
    let r = store
        .append(new_message(a, ContactId::new_v4(), "x", None))
        .await;
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "unknown contact: {r:?}"
    );
}

async fn history_pages(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let (_, other_contact) = {
        let c = ContactId::new_v4();
        store
            .create_contact(NewContact {
                id: c,
                workspace_id: ws,
                name: "Bob".into(),
                phone: None,
            })
            .await
            .unwrap();
        (ws, c)
    };
    let mut sent = Vec::new();
    for i in 0..25 {
        let m = store
            .append(new_message(ws, contact, &format!("m{i}"), None))
            .await
            .unwrap();
        sent.push(m.into_message());
        // Interleave another conversation, so the contact's seqs have gaps.
        store
            .append(new_message(ws, other_contact, "other", None))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store.history(contact, before, 10).await.unwrap();
        pages += 1;
        assert!(page.messages.len() <= 10);
        assert!(
            page.messages.windows(2).all(|w| w[0].seq > w[1].seq),
            "newest first"
        );
        assert!(
            page.messages.iter().all(|m| m.contact_id == contact),
            "only this conversation"
        );
        before = page.messages.last().map(|m| m.seq);
        seen.extend(page.messages);
        if !page.has_more {
            break;
        }
        assert!(pages < 10, "history never ends");
    }
    assert_eq!(pages, 3, "25 messages in pages of 10");
    seen.reverse();
    assert_eq!(seen, sent, "pages cover everything, no gap, no overlap");
    let empty = store.history(ContactId::new_v4(), None, 10).await.unwrap();
    assert!(empty.messages.is_empty() && !empty.has_more);
}

async fn sync_after(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    assert_eq!(
        store.last_seq(ws).await.unwrap(),
        0,
        "last_seq of a workspace without messages"
    );
    assert_eq!(
        store.last_seq(WorkspaceId::new_v4()).await.unwrap(),
        0,
        "last_seq of an unknown workspace"
    );
    let mut all = Vec::new();
    for i in 0..12 {
        all.push(
            store
                .append(new_message(ws, contact, &format!("s{i}"), None))
                .await
                .unwrap()
                .into_message(),
        );
    }
    assert_eq!(
        store.last_seq(ws).await.unwrap(),
        12,
        "last_seq after 12 appends"
    );
    let page = store.sync(SyncScope::Workspace(ws), 4, 200).await.unwrap();
    assert_eq!(
        page.messages,
        all[4..].to_vec(),
        "exactly the messages after seq 4, in order"
    );
    assert!(!page.has_more);
    let page = store.sync(SyncScope::Workspace(ws), 0, 5).await.unwrap();
    assert_eq!(page.messages, all[..5].to_vec());
    assert!(page.has_more);
    let page = store
        .sync(SyncScope::Contact(contact), 10, 50)
        .await
        .unwrap();
    assert_eq!(page.messages, all[10..].to_vec());
    let page = store.sync(SyncScope::Workspace(ws), 12, 50).await.unwrap();
    assert!(
        page.messages.is_empty() && !page.has_more,
        "nothing after the last"
    );
}

async fn mark_read(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    for _ in 0..5 {
        store
            .append(new_message(ws, contact, "r", None))
            .await
            .unwrap();
    }
    assert_eq!(store.mark_read(contact, 3).await.unwrap(), 3);
    assert_eq!(
        store.mark_read(contact, 3).await.unwrap(),
        0,
        "already read"
    );
    let page = store
        .sync(SyncScope::Contact(contact), 0, 50)
        .await
        .unwrap();
    let read: Vec<bool> = page.messages.iter().map(|m| m.is_read).collect();
    assert_eq!(read, [true, true, true, false, false]);
}

async fn contact_lists(store: &impl Store) {
    let (ws, ada) = workspace_with_contact(store).await;
    // Two of one name: the id decides between them. "Zoë" and "bo" sort after "Ada"
    // and "Cy" by bytes, whatever the database's locale would say.
    let mut names = vec![("Cy", ContactId::new_v4()), ("Cy", ContactId::new_v4())];
    names.extend([("Zoë", ContactId::new_v4()), ("bo", ContactId::new_v4())]);
    for (name, id) in &names {
        store
            .create_contact(NewContact {
                id: *id,
                workspace_id: ws,
                name: (*name).into(),
                phone: None,
            })
            .await
            .unwrap();
    }
    let (elsewhere, _) = workspace_with_contact(store).await;
    let mut cys = [names[0].1, names[1].1];
    cys.sort();
    let expected = [ada, cys[0], cys[1], names[2].1, names[3].1];

    let all = store.contacts(ws, 100).await.unwrap();
    let ids: Vec<ContactId> = all.iter().map(|c| c.id).collect();
    assert_eq!(ids, expected, "by name in byte order, then by id: {all:?}");
    assert!(
        all.iter().all(|c| c.workspace_id == ws),
        "only the workspace's own contacts"
    );
    assert_eq!(
        all[0],
        store.contact(ada).await.unwrap().unwrap(),
        "each as `contact` returns it"
    );
    let first = store.contacts(ws, 2).await.unwrap();
    assert_eq!(first, all[..2], "at most `limit`, from the start");
    assert_eq!(store.contacts(elsewhere, 100).await.unwrap().len(), 1);
    assert!(
        store
            .contacts(WorkspaceId::new_v4(), 100)
            .await
            .unwrap()
            .is_empty(),
        "no such workspace: no contacts"
    );
}

async fn unread_counts(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let other = ContactId::new_v4();
    store
        .create_contact(NewContact {
            id: other,
            workspace_id: ws,
            name: "Bo".into(),
            phone: None,
        })
        .await
        .unwrap();
    let inbound = |c, body| NewMessage {
        direction: Direction::Inbound,
        status: Status::Received,
        ..new_message(ws, c, body, None)
    };
    for body in ["1", "2", "3"] {
        store.append(inbound(contact, body)).await.unwrap();
    }
    // An agent's reply is never unread.
    store
        .append(new_message(ws, contact, "reply", None))
        .await
        .unwrap();
    store.append(inbound(other, "4")).await.unwrap();
    let mut counts = store.unread_counts(ws).await.unwrap();
    counts.sort();
    let mut expected = vec![(contact, 3), (other, 1)];
    expected.sort();
    assert_eq!(counts, expected, "inbound unread per contact");

    store.mark_read(contact, 2).await.unwrap();
    let counts = store.unread_counts(ws).await.unwrap();
    assert!(
        counts.contains(&(contact, 1)),
        "seq 3 is still unread: {counts:?}"
    );
    store.mark_read(other, 5).await.unwrap();
    let counts = store.unread_counts(ws).await.unwrap();
    assert_eq!(
        counts,
        vec![(contact, 1)],
        "contacts with none are left out"
    );

    let (empty, _) = workspace_with_contact(store).await;
    assert!(store.unread_counts(empty).await.unwrap().is_empty());
}

async fn reactions(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let m = store
        .append(new_message(ws, contact, "react to me", None))
        .await
        .unwrap()
        .into_message();
    let like = |user: &str, emoji: &str| Reaction {
        emoji: emoji.into(),
        user_id: UserId::from(user),
    };
    assert_eq!(
        store
            .toggle_reaction(m.id, like("ann", "👍"), 2)
            .await
            .unwrap(),
        Toggled::Added
    );
    assert_eq!(
        store
            .toggle_reaction(m.id, like("bo", "👍"), 2)
            .await
            .unwrap(),
        Toggled::Added,
        "one per user: another user may use the same emoji"
    );
    assert_eq!(
        store
            .toggle_reaction(m.id, like("ann", "🎉"), 2)
            .await
            .unwrap(),
        Toggled::Added
    );
    assert_eq!(
        store
            .toggle_reaction(m.id, like("ann", "❤️"), 2)
            .await
            .unwrap(),
        Toggled::Full,
        "ann has the most reactions allowed"
    );
    let read = store.message(m.id).await.unwrap().expect("the message");
    let mut got = read.reactions.clone();
    got.sort_by(|a, b| (&a.user_id, &a.emoji).cmp(&(&b.user_id, &b.emoji)));
    assert_eq!(
        got,
        vec![like("ann", "🎉"), like("ann", "👍"), like("bo", "👍")]
    );

    assert_eq!(
        store
            .toggle_reaction(m.id, like("ann", "👍"), 2)
            .await
            .unwrap(),
        Toggled::Removed,
        "sending the same again removes it"
    );
    let page = store.history(contact, None, 50).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    let mut got = page.messages[0].reactions.clone();
    got.sort_by(|a, b| (&a.user_id, &a.emoji).cmp(&(&b.user_id, &b.emoji)));
    assert_eq!(
        got,
        vec![like("ann", "🎉"), like("bo", "👍")],
        "history carries them"
    );
    let page = store.sync(SyncScope::Workspace(ws), 0, 50).await.unwrap();
    assert_eq!(page.messages[0].reactions.len(), 2, "sync carries them");

    match store
        .toggle_reaction(MessageId::new_v4(), like("ann", "👍"), 2)
        .await
    {
        Err(StoreError::NotFound("message")) => {}
        other => panic!("a reaction to no message: {other:?}"),
    }
    assert!(store.message(MessageId::new_v4()).await.unwrap().is_none());
}

async fn status_updates(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let m = store
        .append(NewMessage {
            status: Status::Queued,
            msg_type: MsgType::Sms,
            ..new_message(ws, contact, "by sms", None)
        })
        .await
        .unwrap()
        .into_message();
    let sent = store
        .update_status(
            m.id,
            Status::Sent,
            Status::Sent.follows(),
            Some("SM1".into()),
        )
        .await
        .unwrap()
        .expect("queued → sent");
    assert_eq!(
        (sent.status, sent.twilio_sid.as_deref()),
        (Status::Sent, Some("SM1"))
    );
    assert_eq!(sent.seq, m.seq, "an update keeps the seq");
    assert!(
        store
            .update_status(m.id, Status::Sent, Status::Sent.follows(), None)
            .await
            .unwrap()
            .is_none(),
        "a repeated report changes nothing"
    );
    let delivered = store
        .update_status(m.id, Status::Delivered, Status::Delivered.follows(), None)
        .await
        .unwrap()
        .expect("sent → delivered");
    assert_eq!(delivered.status, Status::Delivered);
    assert_eq!(
        delivered.twilio_sid.as_deref(),
        Some("SM1"),
        "the SID stays"
    );
    assert!(
        store
            .update_status(m.id, Status::Failed, Status::Failed.follows(), None)
            .await
            .unwrap()
            .is_none(),
        "delivered is final"
    );
    let read = store.message(m.id).await.unwrap().unwrap();
    assert_eq!(read.status, Status::Delivered);
    assert!(
        store
            .update_status(
                MessageId::new_v4(),
                Status::Sent,
                Status::Sent.follows(),
                None
            )
            .await
            .unwrap()
            .is_none()
    );
}

async fn sms_outbox(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let sms = |body: &str| NewMessage {
        status: Status::Queued,
        msg_type: MsgType::Sms,
        ..new_message(ws, contact, body, None)
    };
    let first = store.append(sms("first")).await.unwrap().into_message();
    let second = store.append(sms("second")).await.unwrap().into_message();
    // Neither a chat message nor an inbound SMS is ever in the outbox.
    store
        .append(new_message(ws, contact, "chat", None))
        .await
        .unwrap();
    store
        .append(NewMessage {
            direction: Direction::Inbound,
            status: Status::Received,
            msg_type: MsgType::Sms,
            ..new_message(ws, contact, "from the contact", None)
        })
        .await
        .unwrap();
    // Other checks share the store: far-future times keep their SMS out of the way
    // and this one's SMS in it.
    let now = 4_000_000_000_000_i64;
    let mine = |claimed: Vec<(crate::model::Message, u32)>| -> Vec<(MessageId, u32)> {
        claimed
            .into_iter()
            .filter(|(m, _)| m.workspace_id == ws)
            .map(|(m, n)| (m.id, n))
            .collect()
    };
    let claimed = mine(store.claim_due_sms(now, now + 1000, 100).await.unwrap());
    assert_eq!(
        claimed,
        vec![(first.id, 1), (second.id, 1)],
        "both due, oldest first"
    );
    assert!(
        mine(
            store
                .claim_due_sms(now + 10, now + 1000, 100)
                .await
                .unwrap()
        )
        .is_empty(),
        "leased: not due again before the lease ends"
    );
    store.retry_sms_at(second.id, now + 500).await.unwrap();
    store
        .update_status(
            first.id,
            Status::Sent,
            Status::Sent.follows(),
            Some("SMx1".into()),
        )
        .await
        .unwrap();
    let claimed = mine(
        store
            .claim_due_sms(now + 500, now + 2000, 100)
            .await
            .unwrap(),
    );
    assert_eq!(
        claimed,
        vec![(second.id, 2)],
        "a sent one is done; the retry counts its try"
    );
    let found = store
        .message_by_twilio_sid("SMx1")
        .await
        .unwrap()
        .expect("found by SID");
    assert_eq!(found.id, first.id);
    assert!(
        store
            .message_by_twilio_sid("SMnone")
            .await
            .unwrap()
            .is_none()
    );
}

async fn phones(store: &impl Store) {
    let number = format!(
        "+1555{}",
        &WorkspaceId::new_v4().0.simple().to_string()[..7]
    );
    let ws = WorkspaceId::new_v4();
    store
        .create_workspace(NewWorkspace {
            id: ws,
            name: "SMS".into(),
            phone: Some(number.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .workspace_by_phone(&number)
            .await
            .unwrap()
            .map(|w| w.id),
        Some(ws)
    );
    assert!(store.workspace_by_phone("+0000").await.unwrap().is_none());
    let first = store.contact_for_phone(ws, "+15550100").await.unwrap();
    assert_eq!(first.phone.as_deref(), Some("+15550100"));
    assert_eq!(first.workspace_id, ws);
    let again = store.contact_for_phone(ws, "+15550100").await.unwrap();
    assert_eq!(again.id, first.id, "found, not created twice");
    let (other_ws, _) = workspace_with_contact(store).await;
    let elsewhere = store
        .contact_for_phone(other_ws, "+15550100")
        .await
        .unwrap();
    assert_ne!(
        elsewhere.id, first.id,
        "a number is a contact per workspace"
    );
    let racing =
        futures_util::future::join_all((0..8).map(|_| store.contact_for_phone(ws, "+15550199")))
            .await;
    let ids: HashSet<ContactId> = racing.into_iter().map(|c| c.unwrap().id).collect();
    assert_eq!(
        ids.len(),
        1,
        "racing first messages from one number make one contact"
    );
    match store.contact_for_phone(WorkspaceId::new_v4(), "+1").await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("a contact in no workspace: {other:?}"),
    }
}

async fn batch(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let results = store
        .append_batch(vec![
            new_message(ws, contact, "b1", Some("b1")),
            new_message(ws, contact, "b2", None),
            new_message(ws, ContactId::new_v4(), "bad", None),
            new_message(ws, contact, "b1 again", Some("b1")),
            new_message(ws, contact, "b3", None),
        ])
        .await;
    assert_eq!(results.len(), 5, "one result per message");
    let seqs: Vec<Option<i64>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|a| a.message().seq))
        .collect();
    assert_eq!(seqs, [Some(1), Some(2), None, Some(1), Some(3)]);
    assert!(
        matches!(results[3], Ok(Appended::Duplicate(_))),
        "a repeat inside one batch is a duplicate"
    );
    assert!(
        matches!(results[2], Err(StoreError::NotFound(_))),
        "one bad message fails alone"
    );
}

/// A batch with retries of stored messages, repeats inside the batch and two
/// workspaces: seqs per workspace in batch order, and what a read returns is exactly
/// what the append answered.
async fn batch_across_workspaces(store: &impl Store) {
    let (ws1, c1) = workspace_with_contact(store).await;
    let (ws2, c2) = workspace_with_contact(store).await;
    let first = store
        .append(new_message(ws1, c1, "k0", Some("k0")))
        .await
        .expect("append")
        .into_message();
    let results = store
        .append_batch(vec![
            new_message(ws1, c1, "k0 retried", Some("k0")),
            new_message(ws2, c2, "same key, other workspace", Some("k0")),
            new_message(ws1, c1, "k1", Some("k1")),
            new_message(ws1, c1, "k1 repeated", Some("k1")),
            new_message(ws2, c2, "no key", None),
            new_message(ws1, c1, "no key", None),
        ])
        .await;
    let results: Vec<Appended> = results
        .into_iter()
        .map(|r| r.expect("every message of the batch goes in"))
        .collect();
    let seen: Vec<(bool, WorkspaceId, i64, &str)> = results
        .iter()
        .map(|a| {
            let m = a.message();
            (
                matches!(a, Appended::Inserted(_)),
                m.workspace_id,
                m.seq,
                m.body.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (false, ws1, 1, "k0"),
            (true, ws2, 1, "same key, other workspace"),
            (true, ws1, 2, "k1"),
            (false, ws1, 2, "k1"),
            (true, ws2, 2, "no key"),
            (true, ws1, 3, "no key"),
        ]
    );
    assert_eq!(
        results[0].message(),
        &first,
        "a retry answers the stored message"
    );
    for (ws, expected) in [
        (
            ws1,
            vec![&first, results[2].message(), results[5].message()],
        ),
        (ws2, vec![results[1].message(), results[4].message()]),
    ] {
        let page = store.sync(SyncScope::Workspace(ws), 0, 50).await.unwrap();
        assert_eq!(
            page.messages.iter().collect::<Vec<_>>(),
            expected,
            "a read returns what the batch answered"
        );
        assert_eq!(store.last_seq(ws).await.unwrap(), expected.len() as i64);
    }
    let next = store
        .append(new_message(ws1, c1, "after the batch", None))
        .await
        .unwrap();
    assert_eq!(
        next.message().seq,
        4,
        "the workspace counter moved with the batch"
    );
}

/// More messages in one batch than any statement of a store could bind one by one.
async fn large_batch(store: &impl Store) {
    let (ws, contact) = workspace_with_contact(store).await;
    let n = 3000;
    let results = store
        .append_batch(
            (0..n)
                .map(|i| new_message(ws, contact, &format!("m{i}"), Some(&format!("k{i}"))))
                .collect(),
        )
        .await;
    let seqs: Vec<i64> = results
        .into_iter()
        .map(|r| r.expect("append").message().seq)
        .collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<i64>>());
    let page = store
        .sync(SyncScope::Workspace(ws), 2990, 50)
        .await
        .unwrap();
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "m2990", "m2991", "m2992", "m2993", "m2994", "m2995", "m2996", "m2997", "m2998",
            "m2999"
        ]
    );
}

async fn racing_retries_store_once<S: Store>(store: Arc<S>) {
    let (ws, contact) = workspace_with_contact(&*store).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append(new_message(
                    ws,
                    contact,
                    &format!("race {i}"),
                    Some("same-key"),
                ))
                .await
                .expect("append")
        });
    }
    let mut inserted = 0;
    let mut ids = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("task");
        inserted += usize::from(matches!(r, Appended::Inserted(_)));
        ids.insert(r.message().id);
    }
    assert_eq!(inserted, 1, "exactly one racing retry inserts");
    assert_eq!(ids.len(), 1, "every retry sees the same message");
    let page = store.sync(SyncScope::Workspace(ws), 0, 50).await.unwrap();
    assert_eq!(page.messages.len(), 1);
}

mod services;
pub use services::{Gate, PrivateRedis, test_redis_url};
#[cfg(feature = "postgres")]
pub use services::{PrivatePostgres, ScratchDatabase};
