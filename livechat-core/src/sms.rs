//! The SMS channel: inbound messages and status reports from an SMS provider, and the
//! outbox that sends agents' SMS replies through an [`SmsGateway`].
//!
//! An outbound message with `msgType: "sms"` is stored as `queued`, like any other
//! message first, and that stored row is the outbox: it survives restarts. The
//! [`SmsOutbox`] takes due rows, hands each to the gateway and moves it to `sent` with
//! the provider's id, or tries again later with exponential backoff, and moves it to
//! `failed` after the last try or at once when the provider refuses it for good. Every
//! change is stored and emitted as `message_updated`. A message is sent at least once:
//! if the process dies between the provider's answer and the status update, the next
//! try sends it again.
//!
//! With feature `twilio`, [`twilio`] has the gateway for Twilio's Messages API and the
//! webhook signature check.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, Semaphore};

use crate::chat::{LiveChat, Publish};
use crate::error::ChatError;
use crate::model::{Direction, Message, MessageId, MsgType, Status};

#[cfg(feature = "twilio")]
pub mod twilio;

/// An SMS for the gateway to send.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboundSms {
    /// The stored message it comes from.
    pub message_id: MessageId,
    /// The contact's number.
    pub to: String,
    /// The workspace's number.
    pub from: String,
    /// The text.
    pub body: String,
}

/// Why a gateway did not take an SMS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmsError {
    /// Worth another try later: the provider is down or busy (5xx, 429), or the
    /// network failed.
    #[error("temporary SMS failure: {0}")]
    Temporary(String),
    /// Another try would fail the same way: the provider refused the request (4xx).
    #[error("SMS refused: {0}")]
    Refused(String),
}

/// A future a gateway returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<String, SmsError>> + Send + 'a>>;

/// Sends SMS through a provider.
pub trait SmsGateway: Send + Sync + 'static {
    /// Sends one SMS; returns the provider's id for it (Twilio's message SID), by
    /// which its status reports find it.
    fn send<'a>(&'a self, sms: &'a OutboundSms) -> SendFuture<'a>;
}

/// How the outbox sends and retries.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SmsRetry {
    /// Tries per SMS before it is `failed`. Defaults to 6.
    pub max_attempts: u32,
    /// The wait after the first failed try; it doubles with every further one.
    /// Defaults to 2 s.
    pub first_delay: Duration,
    /// The longest wait between tries. Defaults to 5 minutes.
    pub max_delay: Duration,
    /// How long one try may take before it counts as failed. A claimed SMS is kept
    /// from other outboxes for this long plus 10 s. Defaults to 30 s.
    pub send_timeout: Duration,
    /// SMS sent at once. Defaults to 8.
    pub concurrency: usize,
    /// How often the outbox looks for due SMS when nothing woke it. Defaults to 1 s.
    pub poll: Duration,
    /// The sender number for workspaces without one of their own.
    pub default_from: Option<String>,
}

impl Default for SmsRetry {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            send_timeout: Duration::from_secs(30),
            concurrency: 8,
            poll: Duration::from_secs(1),
            default_from: None,
        }
    }
}

impl SmsRetry {
    /// The wait after the `attempt`-th failed try.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doubled = self
            .first_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        doubled.min(self.max_delay)
    }
}

/// The running outbox: sends queued SMS until dropped or stopped.
#[derive(Debug)]
pub struct SmsOutbox {
    task: tokio::task::JoinHandle<()>,
}

impl SmsOutbox {
    /// Starts sending `chat`'s queued SMS through `gateway`, and lets `chat` accept
    /// outbound SMS. Start one per process; several nodes may each run one on a
    /// shared store (a claimed SMS is leased to its node).
    pub fn start(chat: LiveChat, gateway: impl SmsGateway, retry: SmsRetry) -> Self {
        let wake = Arc::new(Notify::new());
        chat.set_sms_outbox(wake.clone());
        let task = tokio::spawn(run(chat, Arc::new(gateway), retry, wake));
        Self { task }
    }

    /// Stops the outbox. SMS being sent may be sent once more by the next outbox.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for SmsOutbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Time a claimed SMS is kept from the others beyond its send timeout, for the
/// status update after the answer.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

async fn run(chat: LiveChat, gateway: Arc<dyn SmsGateway>, retry: SmsRetry, wake: Arc<Notify>) {
    let permits = Arc::new(Semaphore::new(retry.concurrency.max(1)));
    loop {
        // Claim only what can be sent at once, so that every lease starts with its
        // send and outlasts it: a lease that ran out while its SMS waited for a slot
        // would let the SMS be claimed, and sent, a second time.
        let Ok(first) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut slots = vec![first];
        while let Ok(more) = permits.clone().try_acquire_owned() {
            slots.push(more);
        }
        let now = Utc::now().timestamp_millis();
        let lease = now + millis(retry.send_timeout + LEASE_MARGIN);
        let limit = u32::try_from(slots.len()).unwrap_or(u32::MAX);
        let claimed = match chat.store().claim_due_sms(now, lease, limit).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "sms outbox: cannot read due messages");
                Vec::new()
            }
        };
        let full = claimed.len() == slots.len();
        for (message, attempt) in claimed {
            let Some(slot) = slots.pop() else { break };
            let (chat, gateway, retry) = (chat.clone(), gateway.clone(), retry.clone());
            tokio::spawn(async move {
                send_one(&chat, &*gateway, &retry, message, attempt).await;
                drop(slot);
            });
        }
        drop(slots);
        if !full {
            let _ = tokio::time::timeout(retry.poll, wake.notified()).await;
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// What the outbox may move a message from: only `queued`. A try whose outcome comes
/// late never overwrites what another try recorded (`sent`, with its SID).
const FROM_QUEUED: &[Status] = &[Status::Queued];

async fn send_one(
    chat: &LiveChat,
    gateway: &dyn SmsGateway,
    retry: &SmsRetry,
    message: Message,
    attempt: u32,
) {
    let id = message.id;
    let outcome = match chat.sms_for(&message, retry).await {
        Ok(sms) => match tokio::time::timeout(retry.send_timeout, gateway.send(&sms)).await {
            Ok(result) => result,
            Err(_) => Err(SmsError::Temporary(
                "the gateway did not answer in time".into(),
            )),
        },
        Err(e) => Err(e),
    };
    let update = match outcome {
        Ok(sid) => {
            tracing::info!(message_id = %id, attempt, "sms sent");
            chat.move_status(id, Status::Sent, FROM_QUEUED, Some(sid))
                .await
        }
        Err(SmsError::Temporary(reason)) if attempt < retry.max_attempts => {
            let wait = retry.delay_after(attempt);
            tracing::warn!(message_id = %id, attempt, %reason, retry_in = ?wait, "sms not sent, trying again later");
            let at = Utc::now().timestamp_millis() + millis(wait);
            match chat.store().retry_sms_at(id, at).await {
                Ok(()) => return,
                Err(e) => Err(ChatError::Store(e)),
            }
        }
        Err(e) => {
            tracing::warn!(message_id = %id, attempt, error = %e, "sms failed for good");
            chat.move_status(id, Status::Failed, FROM_QUEUED, None)
                .await
        }
    };
    if let Err(e) = update {
        // The lease runs out and the SMS is tried again.
        tracing::warn!(message_id = %id, error = %e, "sms outbox: cannot record the outcome");
    }
}

/// An SMS a contact sent to a workspace's number.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundSms {
    /// The provider's id of the message (Twilio's `MessageSid`): a repeated delivery
    /// of the same id stores nothing new.
    pub sid: String,
    /// The contact's number.
    pub from: String,
    /// The workspace's number.
    pub to: String,
    /// The text.
    pub body: String,
}

impl InboundSms {
    /// An inbound SMS.
    pub fn new(
        sid: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self {
            sid: sid.into(),
            from: from.into(),
            to: to.into(),
            body: body.into(),
        }
    }
}

/// A provider's delivery status, as Twilio words it.
pub fn status_from_provider(word: &str) -> Option<Status> {
    match word {
        "sent" => Some(Status::Sent),
        "delivered" | "read" => Some(Status::Delivered),
        "failed" | "undelivered" | "canceled" => Some(Status::Failed),
        _ => None,
    }
}

impl LiveChat {
    /// An SMS from a contact: the workspace is the one whose number it was sent to, the
    /// contact the workspace's one with the sender's number (created on the first
    /// message). Stored as an inbound `sms` message through the same pipeline as every
    /// message (moderation included) and delivered at once; a repeat of the same `sid`
    /// returns the stored message and delivers nothing.
    pub async fn receive_sms(&self, sms: InboundSms) -> Result<Message, ChatError> {
        let store = self.store();
        let workspace = store
            .workspace_by_phone(&sms.to)
            .await?
            .ok_or(ChatError::NotFound("workspace with this number"))?;
        let contact = store.contact_for_phone(workspace.id, &sms.from).await?;
        let mut message = Publish::new(contact.id, Direction::Inbound, sms.body)
            .sender(sms.from)
            .client_id(sms.sid.clone())
            .msg_type(MsgType::Sms);
        message.status = Some(Status::Received);
        message.twilio_sid = Some(sms.sid);
        self.publish(message).await
    }

    /// A provider's status report for the message with provider id `sid`: `sent`,
    /// `delivered` and `failed` (and Twilio's synonyms) move it along; other words
    /// (`queued`, `sending`, …) and reports that would move it back change nothing.
    pub async fn sms_status(&self, sid: &str, word: &str) -> Result<Option<Message>, ChatError> {
        let Some(status) = status_from_provider(word) else {
            return Ok(None);
        };
        let message = self
            .store()
            .message_by_twilio_sid(sid)
            .await?
            .ok_or(ChatError::NotFound("message"))?;
        self.update_status(message.id, status, None).await
    }

    /// What the gateway is given for a queued message, or why it cannot be sent.
    async fn sms_for(&self, message: &Message, retry: &SmsRetry) -> Result<OutboundSms, SmsError> {
        let store = self.store();
        let unreadable = |e: crate::error::StoreError| SmsError::Temporary(e.to_string());
        let refused = |why: &str| SmsError::Refused(why.to_owned());
        let contact = store
            .contact(message.contact_id)
            .await
            .map_err(unreadable)?
            .ok_or_else(|| refused("the contact is gone"))?;
        let to = contact
            .phone
            .ok_or_else(|| refused("the contact has no phone number"))?;
        let workspace = store
            .workspace(message.workspace_id)
            .await
            .map_err(unreadable)?;
        let from = workspace
            .and_then(|w| w.phone)
            .or_else(|| retry.default_from.clone())
            .ok_or_else(|| refused("neither the workspace nor the server has an SMS number"))?;
        Ok(OutboundSms {
            message_id: message.id,
            to,
            from,
            body: message.body.clone(),
        })
    }
}
