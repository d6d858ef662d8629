//! Moderation: a chain of [`Moderator`]s that every message passes after validation
//! and before storage. Each may allow it, rewrite its body, reject it, or flag it for
//! agents to review. `livechat-core` only defines the contract; the WebAssembly plugin
//! host (`livechat-plugins`) is one implementation, and hosts may write their own.

use std::future::Future;
use std::pin::Pin;

use crate::model::{ContactId, Direction, MsgType, WorkspaceId};

/// What a moderator sees of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The workspace it belongs to.
    pub workspace_id: WorkspaceId,
    /// The conversation.
    pub contact_id: ContactId,
    /// Who wrote it.
    pub sender: Option<&'a str>,
    /// The body, as rewritten by the moderators before this one.
    pub body: &'a str,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The kind of message.
    pub msg_type: MsgType,
}

/// A moderator's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Store it as it is.
    Allow,
    /// Store this body instead.
    Rewrite(String),
    /// Store nothing; the sender gets `rejected` with this reason.
    Reject(String),
    /// Store it, marked with this reason for agents to review.
    Flag(String),
}

/// A moderator that could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModerationError {
    /// It ran past its deadline.
    #[error("moderator {0} ran past its deadline")]
    Timeout(String),
    /// It crashed (a trap, a memory limit, a panic).
    #[error("moderator {name} failed: {reason}")]
    Failed {
        /// The moderator.
        name: String,
        /// What happened.
        reason: String,
    },
    /// Its answer broke a rule (too long, not UTF-8…).
    #[error("moderator {name} gave an invalid answer: {reason}")]
    InvalidOutput {
        /// The moderator.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// Too many checks are already running.
    #[error("moderator {0} is overloaded")]
    Overloaded(String),
}

/// What happens to a message when a moderator fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Refuse the message (`rejected`): nothing unchecked reaches agents. The default.
    /// A moderator that was only overloaded ([`ModerationError::Overloaded`]) has not
    /// judged the message, so that send is refused with `unavailable` and a retry hint
    /// instead.
    #[default]
    Closed,
    /// Let the message through as if the moderator had allowed it.
    Open,
}

/// Checks messages before they are stored.
///
/// ```
/// use livechat_core::moderation::{Candidate, ModerationError, Moderator, Verdict};
///
/// struct NoShouting;
/// impl Moderator for NoShouting {
///     fn name(&self) -> &str { "no-shouting" }
///     async fn check(&self, m: Candidate<'_>) -> Result<Verdict, ModerationError> {
///         Ok(if m.body.len() > 3 && m.body == m.body.to_uppercase() {
///             Verdict::Rewrite(m.body.to_lowercase())
///         } else {
///             Verdict::Allow
///         })
///     }
/// }
/// ```
pub trait Moderator: Send + Sync + 'static {
    /// A name for logs and errors.
    fn name(&self) -> &str;

    /// Decides on one message.
    fn check(
        &self,
        message: Candidate<'_>,
    ) -> impl Future<Output = Result<Verdict, ModerationError>> + Send;

    /// What to do when `check` fails. Defaults to [`FailurePolicy::Closed`].
    fn failure_policy(&self) -> FailurePolicy {
        FailurePolicy::Closed
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait DynModerator: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn check<'a>(&'a self, m: Candidate<'a>) -> BoxFuture<'a, Result<Verdict, ModerationError>>;
    fn failure_policy(&self) -> FailurePolicy;
}

impl<T: Moderator> DynModerator for T {
    fn name(&self) -> &str {
        Moderator::name(self)
    }
    fn check<'a>(&'a self, m: Candidate<'a>) -> BoxFuture<'a, Result<Verdict, ModerationError>> {
        Box::pin(Moderator::check(self, m))
    }
    fn failure_policy(&self) -> FailurePolicy {
        Moderator::failure_policy(self)
    }
}
