//! An in-memory store: for tests, demos and benchmarks. Nothing survives a restart.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;

use super::{Appended, Directory, MessageStore, NewContact, NewWorkspace, SyncScope, Toggled};
use crate::error::StoreError;
use crate::model::{
    Contact, ContactId, Direction, Message, MessageId, MsgType, NewMessage, Page, Reaction, Role,
    Status, UserId, Workspace, WorkspaceId,
};

/// A store that keeps everything in memory.
///
/// ```
/// use livechat_core::store::MemoryStore;
/// let store = MemoryStore::new();
/// # let _ = store;
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std Mutex, not tokio's: every critical section is short and never awaits,
    // so a blocking lock is cheaper and cannot be held across a suspension point.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    workspaces: HashMap<WorkspaceId, WorkspaceState>,
    contacts: HashMap<ContactId, ContactState>,
    members: HashMap<(WorkspaceId, UserId), Role>,
    /// Where each message lives: its workspace and its index there.
    by_id: HashMap<MessageId, (WorkspaceId, usize)>,
    /// Queued SMS: tries so far and when the next is due (ms since the epoch).
    sms: HashMap<MessageId, (u32, Option<i64>)>,
}

#[derive(Debug)]
struct WorkspaceState {
    workspace: Workspace,
    /// In `seq` order; `seq` is the index + 1, so lookups by `seq` are direct.
    messages: Vec<Message>,
    by_client_id: HashMap<String, usize>,
}

#[derive(Debug)]
struct ContactState {
    contact: Contact,
    /// Indices into the workspace's messages, ascending.
    messages: Vec<usize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data in a consistent state
        // (every mutation is a single push or insert), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn append(&mut self, new: NewMessage) -> Result<Appended, StoreError> {
        let contact = self
            .contacts
            .get_mut(&new.contact_id)
            .filter(|c| c.contact.workspace_id == new.workspace_id)
            .ok_or(StoreError::NotFound("contact"))?;
        let ws = self
            .workspaces
            .get_mut(&new.workspace_id)
            .ok_or(StoreError::NotFound("workspace"))?;
        if let Some(key) = &new.client_id
            && let Some(&idx) = ws.by_client_id.get(key)
        {
            return Ok(Appended::Duplicate(ws.messages[idx].clone()));
        }
        let idx = ws.messages.len();
        let seq = i64::try_from(idx + 1).map_err(|_| StoreError::Corrupt("seq overflow".into()))?;
        if let Some(key) = &new.client_id {
            ws.by_client_id.insert(key.clone(), idx);
        }
        let message = new.into_message(seq);
        ws.messages.push(message.clone());
        contact.messages.push(idx);
        self.by_id.insert(message.id, (message.workspace_id, idx));
        Ok(Appended::Inserted(message))
    }

    fn message_mut(&mut self, id: MessageId) -> Option<&mut Message> {
        let &(ws, idx) = self.by_id.get(&id)?;
        self.workspaces.get_mut(&ws)?.messages.get_mut(idx)
    }
}

fn seq_index(seq: i64) -> usize {
    // seq n lives at index n - 1; anything below 1 means "from the start".
    usize::try_from(seq.max(0)).unwrap_or(usize::MAX)
}

impl MessageStore for MemoryStore {
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.lock().append(message)
    }

    async fn append_batch(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let mut state = self.lock();
        messages.into_iter().map(|m| state.append(m)).collect()
    }

    async fn history(
        &self,
        contact: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let state = self.lock();
        let Some(c) = state.contacts.get(&contact) else {
            return Ok(Page::default());
        };
        let ws = &state.workspaces[&c.contact.workspace_id];
        // Indices are ascending; those before `before` form a prefix.
        let end = match before {
            Some(b) => c.messages.partition_point(|&i| ws.messages[i].seq < b),
            None => c.messages.len(),
        };
        let limit = limit as usize;
        let start = end.saturating_sub(limit);
        let messages = c.messages[start..end]
            .iter()
            .rev()
            .map(|&i| ws.messages[i].clone())
            .collect();
        Ok(Page {
            messages,
            has_more: start > 0,
        })
    }

    async fn sync(&self, scope: SyncScope, after: i64, limit: u32) -> Result<Page, StoreError> {
        let state = self.lock();
        let limit = limit as usize;
        let (messages, has_more) = match scope {
            SyncScope::Workspace(id) => {
                let Some(ws) = state.workspaces.get(&id) else {
                    return Ok(Page::default());
                };
                let tail = ws.messages.get(seq_index(after)..).unwrap_or_default();
                (
                    tail.iter().take(limit).cloned().collect(),
                    tail.len() > limit,
                )
            }
            SyncScope::Contact(id) => {
                let Some(c) = state.contacts.get(&id) else {
                    return Ok(Page::default());
                };
                let ws = &state.workspaces[&c.contact.workspace_id];
                let start = c.messages.partition_point(|&i| ws.messages[i].seq <= after);
                let tail = &c.messages[start..];
                (
                    tail.iter()
                        .take(limit)
                        .map(|&i| ws.messages[i].clone())
                        .collect(),
                    tail.len() > limit,
                )
            }
        };
        Ok(Page { messages, has_more })
    }

    async fn last_seq(&self, workspace: WorkspaceId) -> Result<i64, StoreError> {
        let state = self.lock();
        Ok(state
            .workspaces
            .get(&workspace)
            .map_or(0, |w| w.messages.len() as i64))
    }

    async fn mark_read(&self, contact: ContactId, up_to: i64) -> Result<u64, StoreError> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(c) = state.contacts.get(&contact) else {
            return Ok(0);
        };
        let ws = state
            .workspaces
            .get_mut(&c.contact.workspace_id)
            .ok_or(StoreError::NotFound("workspace"))?;
        let mut changed = 0;
        for &i in &c.messages {
            let m = &mut ws.messages[i];
            if m.seq > up_to {
                break;
            }
            if !m.is_read {
                m.is_read = true;
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        Ok(self.lock().message_mut(id).map(|m| m.clone()))
    }

    async fn update_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        twilio_sid: Option<String>,
    ) -> Result<Option<Message>, StoreError> {
        let mut state = self.lock();
        let Some(m) = state.message_mut(id).filter(|m| from.contains(&m.status)) else {
            return Ok(None);
        };
        m.status = status;
        if twilio_sid.is_some() {
            m.twilio_sid = twilio_sid;
        }
        let updated = m.clone();
        if status != Status::Queued {
            state.sms.remove(&id);
        }
        Ok(Some(updated))
    }

    async fn toggle_reaction(
        &self,
        message: MessageId,
        reaction: Reaction,
        max_per_user: usize,
    ) -> Result<Toggled, StoreError> {
        let mut state = self.lock();
        let m = state
            .message_mut(message)
            .ok_or(StoreError::NotFound("message"))?;
        if let Some(at) = m.reactions.iter().position(|r| *r == reaction) {
            m.reactions.remove(at);
            return Ok(Toggled::Removed);
        }
        let mine = m
            .reactions
            .iter()
            .filter(|r| r.user_id == reaction.user_id)
            .count();
        if mine >= max_per_user {
            return Ok(Toggled::Full);
        }
        m.reactions.push(reaction);
        Ok(Toggled::Added)
    }

    async fn message_by_twilio_sid(&self, sid: &str) -> Result<Option<Message>, StoreError> {
        let state = self.lock();
        Ok(state
            .workspaces
            .values()
            .flat_map(|w| w.messages.iter())
            .find(|m| m.twilio_sid.as_deref() == Some(sid))
            .cloned())
    }

    async fn claim_due_sms(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<(Message, u32)>, StoreError> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut due: Vec<&Message> = state
            .workspaces
            .values()
            .flat_map(|w| w.messages.iter())
            .filter(|m| {
                m.status == Status::Queued
                    && m.msg_type == MsgType::Sms
                    && m.direction == Direction::Outbound
                    && state
                        .sms
                        .get(&m.id)
                        .and_then(|(_, at)| *at)
                        .is_none_or(|at| at <= now)
            })
            .collect();
        due.sort_by_key(|m| (m.created_at, m.seq));
        due.truncate(limit as usize);
        Ok(due
            .into_iter()
            .map(|m| {
                let entry = state.sms.entry(m.id).or_insert((0, None));
                entry.0 += 1;
                entry.1 = Some(lease_until);
                (m.clone(), entry.0)
            })
            .collect())
    }

    async fn retry_sms_at(&self, id: MessageId, at: i64) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state
            .message_mut(id)
            .is_some_and(|m| m.status == Status::Queued)
        {
            state.sms.entry(id).or_insert((0, None)).1 = Some(at);
        }
        Ok(())
    }

    async fn unread_counts(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Vec<(ContactId, u64)>, StoreError> {
        let state = self.lock();
        let Some(ws) = state.workspaces.get(&workspace) else {
            return Ok(Vec::new());
        };
        let mut counts: HashMap<ContactId, u64> = HashMap::new();
        for m in &ws.messages {
            if !m.is_read && m.direction == Direction::Inbound {
                *counts.entry(m.contact_id).or_default() += 1;
            }
        }
        Ok(counts.into_iter().collect())
    }
}

impl Directory for MemoryStore {
    async fn create_workspace(&self, new: NewWorkspace) -> Result<Workspace, StoreError> {
        let mut state = self.lock();
        if state.workspaces.contains_key(&new.id) {
            return Err(StoreError::Conflict("workspace"));
        }
        if new.phone.is_some()
            && state
                .workspaces
                .values()
                .any(|w| w.workspace.phone == new.phone)
        {
            return Err(StoreError::Conflict("workspace phone"));
        }
        let workspace = Workspace {
            id: new.id,
            name: new.name,
            phone: new.phone,
            created_at: Utc::now(),
        };
        state.workspaces.insert(
            new.id,
            WorkspaceState {
                workspace: workspace.clone(),
                messages: Vec::new(),
                by_client_id: HashMap::new(),
            },
        );
        Ok(workspace)
    }

    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        Ok(self.lock().workspaces.get(&id).map(|w| w.workspace.clone()))
    }

    async fn create_contact(&self, new: NewContact) -> Result<Contact, StoreError> {
        let mut state = self.lock();
        if !state.workspaces.contains_key(&new.workspace_id) {
            return Err(StoreError::NotFound("workspace"));
        }
        if state.contacts.contains_key(&new.id) {
            return Err(StoreError::Conflict("contact"));
        }
        let contact = Contact {
            id: new.id,
            workspace_id: new.workspace_id,
            name: new.name,
            phone: new.phone,
            created_at: Utc::now(),
        };
        state.contacts.insert(
            new.id,
            ContactState {
                contact: contact.clone(),
                messages: Vec::new(),
            },
        );
        Ok(contact)
    }

    async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        Ok(self.lock().contacts.get(&id).map(|c| c.contact.clone()))
    }

    async fn contacts(
        &self,
        workspace: WorkspaceId,
        limit: u32,
    ) -> Result<Vec<Contact>, StoreError> {
        let state = self.lock();
        let mut found: Vec<&Contact> = state
            .contacts
            .values()
            .map(|c| &c.contact)
            .filter(|c| c.workspace_id == workspace)
            .collect();
        found.sort_unstable_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(found.into_iter().take(limit as usize).cloned().collect())
    }

    async fn add_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.workspaces.contains_key(&workspace) {
            return Err(StoreError::NotFound("workspace"));
        }
        state.members.insert((workspace, user), role);
        Ok(())
    }

    async fn workspace_by_phone(&self, phone: &str) -> Result<Option<Workspace>, StoreError> {
        Ok(self
            .lock()
            .workspaces
            .values()
            .find(|w| w.workspace.phone.as_deref() == Some(phone))
            .map(|w| w.workspace.clone()))
    }

    async fn contact_for_phone(
        &self,
        workspace: WorkspaceId,
        phone: &str,
    ) -> Result<Contact, StoreError> {
        let mut state = self.lock();
        if !state.workspaces.contains_key(&workspace) {
            return Err(StoreError::NotFound("workspace"));
        }
        let found = state.contacts.values().find(|c| {
            c.contact.workspace_id == workspace && c.contact.phone.as_deref() == Some(phone)
        });
        if let Some(c) = found {
            return Ok(c.contact.clone());
        }
        let contact = Contact {
            id: ContactId::new_v4(),
            workspace_id: workspace,
            name: phone.to_owned(),
            phone: Some(phone.to_owned()),
            created_at: Utc::now(),
        };
        state.contacts.insert(
            contact.id,
            ContactState {
                contact: contact.clone(),
                messages: Vec::new(),
            },
        );
        Ok(contact)
    }

    async fn remove_member(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .members
            .remove(&(workspace, user.clone()))
            .is_some())
    }

    async fn member_role(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<Option<Role>, StoreError> {
        Ok(self.lock().members.get(&(workspace, user.clone())).copied())
    }
}
