//! Who of a workspace is online: a user is online while at least one of their sockets,
//! on any node, is in the workspace's room. Several tabs count once.
//!
//! Each node counts its own sockets. With a [`Fanout`](crate::cluster::Fanout), nodes
//! tell each other when a user comes or goes on them, and every
//! [`PRESENCE_HEARTBEAT`] each sends its whole list, which also corrects anything a
//! lost message left wrong. A node not heard from for three heartbeats (it crashed, or
//! its link did) counts as gone, with all its users. Every node turns the changes of
//! the whole cluster into `presence` events for its own sockets.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{UserId, WorkspaceId};
use crate::protocol::{PresenceChange, PresenceStatus};

/// How often each node sends its whole presence list to the others.
pub const PRESENCE_HEARTBEAT: Duration = Duration::from_secs(5);

/// A node silent for this long is taken as gone.
const NODE_SILENCE: Duration = Duration::from_secs(15);

/// What one node tells the others about its users.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceUpdate {
    /// Users who came (`true`) or went (`false`) on the node since its last update.
    Changes(Vec<(WorkspaceId, UserId, bool)>),
    /// Everyone online on the node. With `ask`, the node has just started and asks the
    /// others to send theirs at once.
    State {
        /// The (workspace, user) pairs with a socket on the node.
        online: Vec<(WorkspaceId, UserId)>,
        /// Whether the others should answer with their state now.
        ask: bool,
    },
}

#[derive(Default)]
struct State {
    /// Sockets per user in each workspace's room, on this node.
    local: HashMap<WorkspaceId, HashMap<UserId, usize>>,
    /// What each other node last said, and when it was last heard.
    remote: HashMap<Uuid, Remote>,
}

struct Remote {
    heard: Instant,
    online: HashSet<(WorkspaceId, UserId)>,
}

impl State {
    fn online(&self, workspace: WorkspaceId, user: &UserId) -> bool {
        self.local
            .get(&workspace)
            .is_some_and(|users| users.contains_key(user))
            || self
                .remote
                .values()
                .any(|r| r.online.contains(&(workspace, user.clone())))
    }
}

/// The presence of one node and what it knows of the others.
#[derive(Default)]
pub(crate) struct Presence {
    state: Mutex<State>,
}

fn change(workspace: WorkspaceId, user: UserId, online: bool) -> PresenceChange {
    PresenceChange {
        workspace_id: workspace,
        user_id: user,
        status: if online {
            PresenceStatus::Online
        } else {
            PresenceStatus::Offline
        },
    }
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A socket of `user` joined the workspace's room here. Returns whether the user
    /// came online on this node, and the change for the cluster view, if any.
    pub(crate) fn joined(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> (bool, Option<PresenceChange>) {
        let mut state = self.lock();
        let was = state.online(workspace, user);
        let sockets = state
            .local
            .entry(workspace)
            .or_default()
            .entry(user.clone())
            .or_default();
        *sockets += 1;
        let first_here = *sockets == 1;
        (
            first_here,
            (!was).then(|| change(workspace, user.clone(), true)),
        )
    }

    /// A socket of `user` left the workspace's room here. Returns whether the user
    /// went offline on this node, and the change for the cluster view, if any.
    pub(crate) fn left(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> (bool, Option<PresenceChange>) {
        let mut state = self.lock();
        let Some(users) = state.local.get_mut(&workspace) else {
            return (false, None);
        };
        let Some(sockets) = users.get_mut(user) else {
            return (false, None);
        };
        *sockets -= 1;
        if *sockets > 0 {
            return (false, None);
        }
        users.remove(user);
        if users.is_empty() {
            state.local.remove(&workspace);
        }
        let gone = !state.online(workspace, user);
        (true, gone.then(|| change(workspace, user.clone(), false)))
    }

    /// Who is online in `workspace`, sorted.
    pub(crate) fn online(&self, workspace: WorkspaceId) -> Vec<UserId> {
        let state = self.lock();
        let mut users: BTreeSet<UserId> = state
            .local
            .get(&workspace)
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default();
        for r in state.remote.values() {
            users.extend(
                r.online
                    .iter()
                    .filter(|(w, _)| *w == workspace)
                    .map(|(_, u)| u.clone()),
            );
        }
        users.into_iter().collect()
    }

    /// Everyone online on this node.
    pub(crate) fn local_state(&self) -> Vec<(WorkspaceId, UserId)> {
        let state = self.lock();
        state
            .local
            .iter()
            .flat_map(|(w, users)| users.keys().map(|u| (*w, u.clone())))
            .collect()
    }

    /// Applies what `node` says; returns the changes to the cluster view.
    pub(crate) fn update_from(
        &self,
        node: Uuid,
        update: PresenceUpdate,
        now: Instant,
    ) -> Vec<PresenceChange> {
        let mut state = self.lock();
        let before: HashSet<(WorkspaceId, UserId)> = state
            .remote
            .get(&node)
            .map(|r| r.online.clone())
            .unwrap_or_default();
        let mut after = before.clone();
        match update {
            PresenceUpdate::Changes(changes) => {
                for (w, u, online) in changes {
                    if online {
                        after.insert((w, u));
                    } else {
                        after.remove(&(w, u));
                    }
                }
            }
            PresenceUpdate::State { online, .. } => after = online.into_iter().collect(),
        }
        let touched: Vec<(WorkspaceId, UserId)> =
            before.symmetric_difference(&after).cloned().collect();
        let was: Vec<bool> = touched.iter().map(|(w, u)| state.online(*w, u)).collect();
        state.remote.insert(
            node,
            Remote {
                heard: now,
                online: after,
            },
        );
        diff(&state, touched, was)
    }

    /// Forgets nodes silent for too long; returns the changes to the cluster view.
    pub(crate) fn expire(&self, now: Instant) -> Vec<PresenceChange> {
        let mut state = self.lock();
        let silent: Vec<Uuid> = state
            .remote
            .iter()
            .filter(|(_, r)| now.duration_since(r.heard) > NODE_SILENCE)
            .map(|(n, _)| *n)
            .collect();
        let mut changes = Vec::new();
        for node in silent {
            let touched: Vec<(WorkspaceId, UserId)> =
                state.remote[&node].online.iter().cloned().collect();
            let was: Vec<bool> = touched.iter().map(|(w, u)| state.online(*w, u)).collect();
            state.remote.remove(&node);
            tracing::info!(%node, "presence: a node went silent; its users count as gone");
            changes.extend(diff(&state, touched, was));
        }
        changes
    }
}

fn diff(state: &State, touched: Vec<(WorkspaceId, UserId)>, was: Vec<bool>) -> Vec<PresenceChange> {
    touched
        .into_iter()
        .zip(was)
        .filter_map(|((w, u), was)| {
            let now = state.online(w, &u);
            (now != was).then(|| change(w, u, now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_count_once_and_other_nodes_count_too() {
        let p = Presence::default();
        let (w, ann) = (WorkspaceId::new_v4(), UserId::from("ann"));
        let (first, c) = p.joined(w, &ann);
        assert!(first);
        assert_eq!(c.map(|c| c.status), Some(PresenceStatus::Online));
        assert_eq!(p.joined(w, &ann), (false, None), "a second tab");
        assert_eq!(p.left(w, &ann), (false, None), "one tab left");

        let other = Uuid::new_v4();
        let now = Instant::now();
        let changes = p.update_from(
            other,
            PresenceUpdate::Changes(vec![(w, ann.clone(), true), (w, "bo".into(), true)]),
            now,
        );
        assert_eq!(changes.len(), 1, "only bo is new: {changes:?}");
        assert_eq!(p.online(w), vec![ann.clone(), UserId::from("bo")]);

        let (gone_here, c) = p.left(w, &ann);
        assert!(gone_here);
        assert_eq!(c, None, "still online on the other node");
        let changes = p.update_from(
            other,
            PresenceUpdate::State {
                online: vec![],
                ask: false,
            },
            now,
        );
        assert_eq!(
            changes.len(),
            2,
            "both went with the other node's new state"
        );
        assert!(p.online(w).is_empty());

        p.update_from(
            other,
            PresenceUpdate::Changes(vec![(w, "cy".into(), true)]),
            now,
        );
        assert!(
            p.expire(now + NODE_SILENCE / 2).is_empty(),
            "not silent yet"
        );
        let changes = p.expire(now + NODE_SILENCE + Duration::from_secs(1));
        assert_eq!(changes.len(), 1, "a silent node's users go: {changes:?}");
        assert_eq!(changes[0].status, PresenceStatus::Offline);
    }
}
