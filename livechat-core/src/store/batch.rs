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
use crate::model::{Message, NewMessage, WorkspaceId};

/// `(workspace, client_id)`: the idempotency key.
pub(crate) type Key = (WorkspaceId, String);

enum Slot {
    Stored(Box<Message>),
    /// The index into [`Plan::fresh`] of the message this one repeats.
    SameAs(usize),
    Fresh(usize),
}

/// A batch sorted for one insert.
pub(crate) struct Plan {
    slots: Vec<Slot>,
    /// The messages to insert, in the batch's order.
    pub(crate) fresh: Vec<NewMessage>,
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

/// Sorts `messages` given the ones already `stored` under their keys.
pub(crate) fn plan(messages: Vec<NewMessage>, stored: &HashMap<Key, Message>) -> Plan {
    let mut first_of: HashMap<Key, usize> = HashMap::new();
    let mut fresh = Vec::with_capacity(messages.len());
    let slots = messages
        .into_iter()
        .map(|m| {
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
            fresh.push(m);
            if let Some(key) = key {
                first_of.insert(key, i);
            }
            Slot::Fresh(i)
        })
        .collect();
    Plan { slots, fresh }
}

impl Plan {
    /// The answers, given the seq each fresh message was stored with (in `fresh` order).
    pub(crate) fn finish(
        self,
        seqs: &[i64],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        if seqs.len() != self.fresh.len() {
            return Err(StoreError::Corrupt(format!(
                "{} messages inserted, {} seqs returned",
                self.fresh.len(),
                seqs.len()
            )));
        }
        let stored: Vec<Message> = self
            .fresh
            .into_iter()
            .zip(seqs)
            .map(|(m, &seq)| m.into_message(seq))
            .collect();
        Ok(self
            .slots
            .into_iter()
            .map(|slot| {
                Ok(match slot {
                    Slot::Stored(m) => Appended::Duplicate(*m),
                    Slot::SameAs(i) => Appended::Duplicate(stored[i].clone()),
                    Slot::Fresh(i) => Appended::Inserted(stored[i].clone()),
                })
            })
            .collect())
    }
}
