//! Isolation, property-tested: random users, memberships, joins, reads and sends,
//! with members added and removed along the way. Every request is allowed exactly
//! when the model says so, and every socket receives exactly the messages of the
//! rooms it was allowed to be in when they were sent — never another workspace's.

use std::collections::BTreeSet;
use std::time::Duration;

use livechat_core::model::{ContactId, Role, UserId, WorkspaceId};
use livechat_core::store::{MemoryStore, NewContact, NewWorkspace};
use livechat_core::{Limits, Rate};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::harness::{Server, TestClient};

const USERS: usize = 3;
const WORKSPACES: usize = 3;
const CONTACTS: usize = 2; // per workspace

#[derive(Clone, Debug)]
enum Op {
    JoinContact(usize, usize, usize),
    JoinWorkspace(usize, usize),
    Send(usize, usize, usize),
    History(usize, usize, usize),
    Sync(usize, usize),
    Add(usize, usize),
    Remove(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let (u, w, c) = (0..USERS, 0..WORKSPACES, 0..CONTACTS);
    prop_oneof![
        3 => (u.clone(), w.clone(), c.clone()).prop_map(|(u, w, c)| Op::JoinContact(u, w, c)),
        3 => (u.clone(), w.clone()).prop_map(|(u, w)| Op::JoinWorkspace(u, w)),
        5 => (u.clone(), w.clone(), c.clone()).prop_map(|(u, w, c)| Op::Send(u, w, c)),
        2 => (u.clone(), w.clone(), c).prop_map(|(u, w, c)| Op::History(u, w, c)),
        2 => (u.clone(), w.clone()).prop_map(|(u, w)| Op::Sync(u, w)),
        1 => (u.clone(), w.clone()).prop_map(|(u, w)| Op::Add(u, w)),
        1 => (u, w).prop_map(|(u, w)| Op::Remove(u, w)),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Room {
    Workspace(usize),
    Contact(usize, usize),
}

fn user(u: usize) -> String {
    format!("user-{u}")
}

async fn check(initial: Vec<(usize, usize)>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut limits = Limits::default();
    limits.send_per_user = Rate::new(1000, 1000);
    limits.send_per_socket = Rate::new(1000, 1000);
    let server = Server::start_with(MemoryStore::new(), limits).await;
    let chat = &server.chat;
    let mut workspaces = Vec::new();
    let mut contacts = Vec::new();
    for w in 0..WORKSPACES {
        let ws = WorkspaceId::new_v4();
        chat.create_workspace(NewWorkspace {
            id: ws,
            name: format!("w{w}"),
            phone: None,
        })
        .await
        .unwrap();
        let mut cs = Vec::new();
        for c in 0..CONTACTS {
            let id = ContactId::new_v4();
            chat.create_contact(NewContact {
                id,
                workspace_id: ws,
                name: format!("c{c}"),
                phone: None,
            })
            .await
            .unwrap();
            cs.push(id);
        }
        workspaces.push(ws);
        contacts.push(cs);
    }
    let mut member: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (u, w) in initial {
        chat.add_member(workspaces[w], UserId(user(u)), Role::Agent)
            .await
            .unwrap();
        member.insert((u, w));
    }
    let mut sockets: Vec<TestClient> = Vec::new();
    for u in 0..USERS {
        sockets.push(server.connect(&user(u)).await);
    }
    let mut rooms: Vec<BTreeSet<Room>> = vec![BTreeSet::new(); USERS];
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); USERS];

    for op in ops {
        match op {
            Op::JoinContact(u, w, c) => {
                let reply = sockets[u]
                    .call("join_contact", json!({ "contactId": contacts[w][c] }))
                    .await;
                prop_assert_eq!(
                    reply["ok"] == true,
                    member.contains(&(u, w)),
                    "join_contact {:?}",
                    reply
                );
                if reply["ok"] == true {
                    rooms[u].insert(Room::Contact(w, c));
                }
            }
            Op::JoinWorkspace(u, w) => {
                let reply = sockets[u]
                    .call("join_workspace", json!({ "workspaceId": workspaces[w] }))
                    .await;
                prop_assert_eq!(
                    reply["ok"] == true,
                    member.contains(&(u, w)),
                    "join_workspace {:?}",
                    reply
                );
                if reply["ok"] == true {
                    rooms[u].insert(Room::Workspace(w));
                }
            }
            Op::Send(u, w, c) => {
                let reply = sockets[u]
                    .call(
                        "send_message",
                        json!({ "contactId": contacts[w][c], "body": "hi" }),
                    )
                    .await;
                prop_assert_eq!(
                    reply["ok"] == true,
                    member.contains(&(u, w)),
                    "send {:?}",
                    reply
                );
                if reply["ok"] == true {
                    let id = reply["data"]["id"].as_str().unwrap().to_owned();
                    for (v, joined) in rooms.iter().enumerate() {
                        if joined.contains(&Room::Workspace(w))
                            || joined.contains(&Room::Contact(w, c))
                        {
                            expected[v].push(id.clone());
                        }
                    }
                }
            }
            Op::History(u, w, c) => {
                let reply = sockets[u]
                    .call("history", json!({ "contactId": contacts[w][c] }))
                    .await;
                prop_assert_eq!(reply["ok"] == true, member.contains(&(u, w)));
                for m in reply["data"]["messages"].as_array().into_iter().flatten() {
                    prop_assert_eq!(&m["workspace_id"], &json!(workspaces[w]));
                }
            }
            Op::Sync(u, w) => {
                let reply = sockets[u]
                    .call("sync", json!({ "workspaceId": workspaces[w], "after": 0 }))
                    .await;
                prop_assert_eq!(reply["ok"] == true, member.contains(&(u, w)));
                for m in reply["data"]["messages"].as_array().into_iter().flatten() {
                    prop_assert_eq!(&m["workspace_id"], &json!(workspaces[w]));
                }
            }
            Op::Add(u, w) => {
                chat.add_member(workspaces[w], UserId(user(u)), Role::Agent)
                    .await
                    .unwrap();
                member.insert((u, w));
            }
            Op::Remove(u, w) => {
                chat.remove_member(workspaces[w], &UserId(user(u)))
                    .await
                    .unwrap();
                member.remove(&(u, w));
                // Removal takes the user's sockets out of every room of that workspace.
                rooms[u]
                    .retain(|r| !matches!(r, Room::Workspace(x) | Room::Contact(x, _) if *x == w));
            }
        }
    }
    for (u, socket) in sockets.iter_mut().enumerate() {
        let got: Vec<Value> = socket
            .collect("new_message", Duration::from_millis(150))
            .await;
        let ids: Vec<String> = got
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        prop_assert_eq!(
            &ids,
            &expected[u],
            "user {} received other than the rooms it may be in",
            u
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn no_sequence_of_requests_crosses_a_workspace(
        initial in proptest::collection::vec((0..USERS, 0..WORKSPACES), 0..6),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
            .block_on(check(initial, ops))?;
    }
}
