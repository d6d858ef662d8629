//! The demo workspace created on first start: two agents, three contacts and a few
//! inbound messages, so that the demo inbox at `/` has something to show.

use std::net::SocketAddr;

use livechat_core::auth::Claims;
use livechat_core::error::{ChatError, StoreError};
use livechat_core::model::{ContactId, Direction, Role, UserId, WorkspaceId};
use livechat_core::store::{NewContact, NewWorkspace};
use livechat_core::{LiveChat, Publish};
use uuid::Uuid;

/// The demo agent's user id (an admin of the demo workspace).
pub const DEMO_AGENT: &str = "demo-agent";

/// The second demo agent's user id (an agent of the demo workspace), so that two
/// browser windows can talk to each other.
pub const DEMO_AGENT_2: &str = "demo-agent-2";

/// The demo records, and tokens for the demo agents.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The demo workspace.
    pub workspace_id: WorkspaceId,
    /// The demo contact: the first of `contacts`, a conversation with no message yet.
    pub contact_id: ContactId,
    /// Every demo contact, `contact_id` first; the others have unread inbound messages.
    pub contacts: Vec<ContactId>,
    /// The demo agent.
    pub agent: UserId,
    /// A 24-hour token for the demo agent, when the server holds the signing secret.
    pub agent_token: Option<String>,
    /// The second demo agent.
    pub second_agent: UserId,
    /// A 24-hour token for the second demo agent, when the server holds the secret.
    pub second_agent_token: Option<String>,
}

impl Demo {
    /// The demo inbox's address for each agent that has a token, on the server at
    /// `addr`: `http://<addr>/#token=…&workspace=…`. The fragment never reaches the
    /// server, so the token stays out of access logs and proxies. An unspecified
    /// address (`0.0.0.0`, `[::]`) becomes the loopback one, where the page's origin
    /// is allowed by default.
    pub fn inbox_links(&self, addr: SocketAddr) -> Vec<(UserId, String)> {
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        [
            (&self.agent, &self.agent_token),
            (&self.second_agent, &self.second_agent_token),
        ]
        .into_iter()
        .filter_map(|(agent, token)| {
            let token = token.as_ref()?;
            let link = format!(
                "http://{addr}/#token={token}&workspace={}",
                self.workspace_id
            );
            Some((agent.clone(), link))
        })
        .collect()
    }
}

/// A demo contact and what it wrote before anyone looked.
struct DemoContact {
    key: &'static str,
    name: &'static str,
    phone: Option<&'static str>,
    inbound: &'static [&'static str],
}

/// The first one is the demo contact the server prints and the tests use: it starts
/// with an empty conversation.
const CONTACTS: [DemoContact; 3] = [
    DemoContact {
        key: "contact",
        name: "Maya Chen",
        phone: None,
        inbound: &[],
    },
    DemoContact {
        key: "contact-2",
        name: "Jonas Weber",
        phone: Some("+15550142"),
        inbound: &[
            "Hi! I ordered a standing desk last week. Any news on the delivery?",
            "The order number is 4821, if that helps.",
        ],
    },
    DemoContact {
        key: "contact-3",
        name: "Priya Shah",
        phone: None,
        inbound: &["Hello, can I change the email address on my account?"],
    },
];

fn demo_id(name: &str) -> Uuid {
    // Fixed ids, so a restart finds the same records instead of making new ones.
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("livechat:demo:{name}").as_bytes(),
    )
}

/// Creates the demo records unless they exist, and signs tokens when it can.
///
/// A contact's inbound messages are written when this call creates the contact, so a
/// restart (or the agents marking them read) never brings them back; their fixed
/// client ids make a second writer racing for the same contact store nothing twice.
pub async fn ensure(chat: &LiveChat, secret: Option<&[u8]>) -> anyhow::Result<Demo> {
    let workspace_id = WorkspaceId(demo_id("workspace"));
    if chat.workspace(workspace_id).await?.is_none() {
        chat.create_workspace(NewWorkspace {
            id: workspace_id,
            name: "Demo workspace".into(),
            phone: None,
        })
        .await
        .map(drop)
        .or_else(created_by_another_node)?;
    }
    let mut contacts = Vec::with_capacity(CONTACTS.len());
    for demo in &CONTACTS {
        let id = ContactId(demo_id(demo.key));
        contacts.push(id);
        if chat.contact(id).await?.is_some() {
            continue;
        }
        let created = chat
            .create_contact(NewContact {
                id,
                workspace_id,
                name: demo.name.into(),
                phone: demo.phone.map(Into::into),
            })
            .await
            .map(|_| true)
            .or_else(|e| created_by_another_node(e).map(|()| false))?;
        if !created {
            continue;
        }
        for (i, body) in demo.inbound.iter().enumerate() {
            let message = Publish::new(id, Direction::Inbound, *body)
                .sender(demo.phone.unwrap_or(demo.name))
                .client_id(format!("livechat:demo:{}:{i}", demo.key));
            match chat.publish(message).await {
                Ok(_) => {}
                // The operator's moderation settings are theirs to choose; a demo
                // message they refuse is no reason not to start.
                Err(ChatError::Rejected(reason)) => {
                    tracing::warn!(%reason, "a plugin refused a demo message; left out");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let agent = UserId::from(DEMO_AGENT);
    let second_agent = UserId::from(DEMO_AGENT_2);
    chat.add_member(workspace_id, agent.clone(), Role::Admin)
        .await?;
    chat.add_member(workspace_id, second_agent.clone(), Role::Agent)
        .await?;
    let sign = |user: &str| {
        secret
            .map(|s| Claims::new(user, chrono::Duration::hours(24)).sign_hs256(s))
            .transpose()
    };
    Ok(Demo {
        workspace_id,
        contact_id: contacts[0],
        contacts,
        agent_token: sign(DEMO_AGENT)?,
        agent,
        second_agent_token: sign(DEMO_AGENT_2)?,
        second_agent,
    })
}

/// Several nodes starting on one database race to create the demo records; the one
/// that loses finds them made, which is all it wanted.
fn created_by_another_node(e: ChatError) -> Result<(), ChatError> {
    match e {
        ChatError::Store(StoreError::Conflict(_)) => Ok(()),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(second_token: Option<&str>) -> Demo {
        Demo {
            workspace_id: WorkspaceId(demo_id("workspace")),
            contact_id: ContactId(demo_id("contact")),
            contacts: vec![ContactId(demo_id("contact"))],
            agent: DEMO_AGENT.into(),
            agent_token: Some("t1".into()),
            second_agent: DEMO_AGENT_2.into(),
            second_agent_token: second_token.map(Into::into),
        }
    }

    #[test]
    fn inbox_links_carry_the_token_in_the_fragment_on_a_reachable_address() {
        let ws = demo_id("workspace");
        let links = demo(Some("t2")).inbox_links("0.0.0.0:3000".parse().unwrap());
        assert_eq!(
            links,
            [
                (
                    UserId::from(DEMO_AGENT),
                    format!("http://127.0.0.1:3000/#token=t1&workspace={ws}")
                ),
                (
                    UserId::from(DEMO_AGENT_2),
                    format!("http://127.0.0.1:3000/#token=t2&workspace={ws}")
                ),
            ]
        );
        let links = demo(None).inbox_links("[::]:8080".parse().unwrap());
        assert_eq!(links.len(), 1, "no token, no link");
        assert!(links[0].1.starts_with("http://[::1]:8080/#token=t1&"));
    }
}
