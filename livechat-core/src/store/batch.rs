//! The part of a set-wise group commit that is the same in every SQL store: answering
//! retries before anything is written, so that one statement can insert the rest.
//!
//! A batch is planned in three steps: the store reads which `(workspace, client_id)`
//! keys of the batch are already stored, [`plan`] sorts every message into "answered
//! by a stored message", "repeats an earlier message of this batch" or "fresh", the
//! store inserts the fresh ones in one statement, and [`Plan::finish`] puts the seqs
//! it got back into one answer per message, in the batch's order.

use std::collections::HashMap;

use super::Appended;
use crate::error::StoreError;
use crate::model::{Message, MessageId, NewMessage, Reaction, WorkspaceId};

/// `(workspace, client_id)`: the idempotency key.
pub(crate) type Key = (WorkspaceId, String);

enum Slot {
    Stored(Box<Message>),
    /// Repeats the fresh message with this index into [`Plan::fresh`].
    SameAs(usize),
    Fresh(usize),
}

/// A batch sorted for one insert. It borrows nothing: the batch itself goes to
/// [`Plan::finish`] only once the insert succeeded, so a failed insert leaves it to
/// the caller for the row-by-row path.
pub(crate) struct Plan {
    slots: Vec<Slot>,
    /// The indices (into the batch) of the messages to insert, in batch order.
    fresh: Vec<usize>,
}

/// The idempotency keys of a batch, each once.
pub(crate) fn keys(messages: &[NewMessage]) -> Vec<Key> {
    let mut keys: Vec<Key> = messages
        .iter()
        .filter_map(|m| Some((m.workspace_id, m.client_id.clone()?)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Stored messages under their idempotency keys (those without a key are left out).
pub(crate) fn by_key(stored: Vec<Message>) -> HashMap<Key, Message> {
    stored
        .into_iter()
        .filter_map(|m| Some(((m.workspace_id, m.client_id.clone()?), m)))
        .collect()
}

/// Sorts `messages` given the ones already `stored` under their keys.
pub(crate) fn plan(messages: &[NewMessage], stored: &HashMap<Key, Message>) -> Plan {
    let mut first_of: HashMap<Key, usize> = HashMap::new();
    let mut fresh = Vec::with_capacity(messages.len());
    let slots = messages
        .iter()
        .enumerate()
        .map(|(at, m)| {
            let key = m.client_id.clone().map(|c| (m.workspace_id, c));
            if let Some(key) = &key {
                if let Some(existing) = stored.get(key) {
                    return Slot::Stored(Box::new(existing.clone()));
                }
                if let Some(&i) = first_of.get(key) {
                    return Slot::SameAs(i);
                }
            }
            let i = fresh.len();
            fresh.push(at);
            if let Some(key) = key {
                first_of.insert(key, i);
            }
            Slot::Fresh(i)
        })
        .collect();
    Plan { slots, fresh }
}

impl Plan {
    /// The messages to insert, in batch order.
    pub(crate) fn fresh<'a>(&self, messages: &'a [NewMessage]) -> Vec<&'a NewMessage> {
        self.fresh.iter().map(|&at| &messages[at]).collect()
    }

    /// The answers for `messages` (the batch that was planned), given the seq each
    /// fresh message was stored with, in order. A fresh message without a seq is
    /// answered as corrupt.
    pub(crate) fn finish(
        self,
        messages: Vec<NewMessage>,
        seqs: &[i64],
    ) -> Vec<Result<Appended, StoreError>> {
        let mut messages: Vec<Option<NewMessage>> = messages.into_iter().map(Some).collect();
        let mut inserted: Vec<Option<Message>> = self
            .fresh
            .iter()
            .zip(seqs)
            .map(|(&at, &seq)| messages[at].take().map(|m| m.into_message(seq)))
            .collect();
        // Repeats first, while every inserted message is still here to copy.
        let mut answers: Vec<Option<Result<Appended, StoreError>>> = self
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::SameAs(i) => inserted[*i].clone().map(|m| Ok(Appended::Duplicate(m))),
                _ => None,
            })
            .collect();
        let lost = || Err(StoreError::Corrupt("a planned message went missing".into()));
        self.slots
            .into_iter()
            .zip(answers.iter_mut())
            .map(|(slot, answer)| match slot {
                Slot::Stored(m) => Ok(Appended::Duplicate(*m)),
                Slot::SameAs(_) => answer.take().unwrap_or_else(lost),
                Slot::Fresh(i) => inserted[i]
                    .take()
                    .map(Appended::Inserted)
                    .map_or_else(lost, Ok),
            })
            .collect()
    }
}

/// Hands each read reaction to its message (reactions of other messages are ignored).
pub(super) fn attach_reactions(
    messages: &mut [Message],
    reactions: impl IntoIterator<Item = (MessageId, Reaction)>,
) {
    let at: HashMap<MessageId, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id, i))
        .collect();
    for (id, reaction) in reactions {
        if let Some(&i) = at.get(&id) {
            messages[i].reactions.push(reaction);
        }
    }
}
