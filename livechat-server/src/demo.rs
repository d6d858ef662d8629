//! The demo workspace, contact and agent created on first start.

use livechat_core::LiveChat;
use livechat_core::auth::Claims;
use livechat_core::error::{ChatError, StoreError};
use livechat_core::model::{ContactId, Role, UserId, WorkspaceId};
use livechat_core::store::{NewContact, NewWorkspace};
use uuid::Uuid;

/// The demo agent's user id.
pub const DEMO_AGENT: &str = "demo-agent";

/// The demo records, and a token for the demo agent.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The demo workspace.
    pub workspace_id: WorkspaceId,
    /// The demo contact.
    pub contact_id: ContactId,
    /// The demo agent.
    pub agent: UserId,
    /// A 24-hour token for the demo agent, when the server holds the signing secret.
    pub agent_token: Option<String>,
}

fn demo_id(name: &str) -> Uuid {
    // Fixed ids, so a restart finds the same records instead of making new ones.
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("livechat:demo:{name}").as_bytes(),
    )
}

/// Creates the demo records unless they exist, and signs a token when it can.
pub async fn ensure(chat: &LiveChat, secret: Option<&[u8]>) -> anyhow::Result<Demo> {
    let workspace_id = WorkspaceId(demo_id("workspace"));
    let contact_id = ContactId(demo_id("contact"));
    let agent = UserId::from(DEMO_AGENT);
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
    if chat.contact(contact_id).await?.is_none() {
        chat.create_contact(NewContact {
            id: contact_id,
            workspace_id,
            name: "Demo contact".into(),
            phone: None,
        })
        .await
        .map(drop)
        .or_else(created_by_another_node)?;
    }
    chat.add_member(workspace_id, agent.clone(), Role::Admin)
        .await?;
    let agent_token = secret
        .map(|s| Claims::new(DEMO_AGENT, chrono::Duration::hours(24)).sign_hs256(s))
        .transpose()?;
    Ok(Demo {
        workspace_id,
        contact_id,
        agent,
        agent_token,
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
