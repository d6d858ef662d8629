//! The Postgres store: the production store, for one node or several.
//!
//! The schema (`migrations/postgres`) uses the seed's table and column names with
//! Postgres types, so it can live in a Supabase project. `seq` is assigned by a
//! `BEFORE INSERT` trigger from the workspace's counter row; the row lock it takes is
//! held until commit, so within a workspace `seq` order is commit order even with many
//! nodes writing, and a reader of `sync(after)` never skips a message that commits
//! later with a smaller `seq`. An `AFTER INSERT` trigger announces every row on the
//! `livechat_messages` channel, which the change feed listens to.

use std::collections::HashMap;
use std::time::Duration;

use chrono::SubsecRound;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Acquire, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{
    Appended, Directory, MessageStore, NewContact, NewWorkspace, SyncScope, Toggled, batch,
};
use crate::error::StoreError;
use crate::model::{
    Contact, ContactId, Message, MessageId, NewMessage, Page, Reaction, Role, Status, UserId,
    Workspace, WorkspaceId,
};

/// Settings of a [`PostgresStore`].
#[derive(Clone, Debug)]
pub struct PostgresStoreOptions {
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
}

impl Default for PostgresStoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

impl PostgresStoreOptions {
    /// Defaults: 10 connections, 5 s acquire time-out, 10 s statement time-out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections in the pool. Defaults to 10.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a request waits for a free connection before `unavailable`. Defaults to 5 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The longest a statement may run (Postgres `statement_timeout`). Defaults to 10 s.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }
}

/// A store on a PostgreSQL database.
///
/// ```no_run
/// # async fn demo() -> Result<(), livechat_core::error::StoreError> {
/// use livechat_core::store::PostgresStore;
/// let store = PostgresStore::open("postgres://livechat@127.0.0.1/livechat").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

/// `SELECT <message columns> FROM livechat_messages ` followed by the rest of a query.
/// A macro, so that every query stays a `'static` literal (sqlx audits dynamic SQL).
macro_rules! select_messages {
    ($($rest:literal),+) => {
        concat!(
            "SELECT id, contact_id, workspace_id, sender, body, is_read, direction, status, \
             twilio_sid, msg_type, created_at, seq, client_id, moderation_flag \
             FROM livechat_messages ",
            $($rest),+
        )
    };
}

impl PostgresStore {
    /// Connects to and migrates the database at `url` with default options.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, PostgresStoreOptions::default()).await
    }

    /// Connects to and migrates the database with the given options. Several nodes
    /// may migrate at once: sqlx serialises migrations with an advisory lock.
    pub async fn open_with(url: &str, options: PostgresStoreOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = url.parse().map_err(backend)?;
        let timeout_ms = options.statement_timeout.as_millis().to_string();
        let connect = connect.options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(map_err)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { pool })
    }

    /// The connection pool, for a host's own queries and for the change feed.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for running statements.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks that the database answers, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn find_by_client_id(
        conn: &mut sqlx::PgConnection,
        workspace: WorkspaceId,
        client_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let row = sqlx::query(select_messages!(
            "WHERE workspace_id = $1 AND client_id = $2"
        ))
        .bind(workspace.0)
        .bind(client_id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// Appends a whole batch with one read of the keys already stored and one insert
    /// (the trigger assigns each row's seq in the batch's order). It fails, leaving the
    /// transaction to roll back, when any row cannot go in.
    async fn append_set(
        tx: &mut Transaction<'static, Postgres>,
        messages: &[NewMessage],
    ) -> Result<(batch::Plan, Vec<i64>), StoreError> {
        let keys = batch::keys(messages);
        let mut stored = HashMap::new();
        if !keys.is_empty() {
            let (workspaces, client_ids): (Vec<Uuid>, Vec<&str>) =
                keys.iter().map(|(w, c)| (w.0, c.as_str())).unzip();
            let rows = sqlx::query(select_messages!(
                "WHERE (workspace_id, client_id) IN \
                 (SELECT * FROM unnest($1::uuid[], $2::text[]))"
            ))
            .bind(workspaces)
            .bind(client_ids)
            .fetch_all(&mut **tx)
            .await
            .map_err(map_err)?;
            stored = batch::by_key(
                rows.iter()
                    .map(message_from_row)
                    .collect::<Result<_, _>>()?,
            );
        }
        let plan = batch::plan(messages, &stored);
        let fresh = plan.fresh(messages);
        if fresh.is_empty() {
            return Ok((plan, Vec::new()));
        }
        let column =
            |f: fn(&NewMessage) -> Option<&str>| fresh.iter().map(|m| f(m)).collect::<Vec<_>>();
        let rows = sqlx::query(
            "INSERT INTO livechat_messages (id, contact_id, workspace_id, sender, body, is_read, \
             direction, status, twilio_sid, msg_type, created_at, client_id, moderation_flag) \
             SELECT id, contact_id, workspace_id, sender, body, false, direction, status, \
                    twilio_sid, msg_type, created_at, client_id, moderation_flag \
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], \
                         $11::text[], $12::text[]) \
                  WITH ORDINALITY AS t(id, contact_id, workspace_id, sender, body, direction, \
                                      status, twilio_sid, msg_type, created_at, client_id, \
                                      moderation_flag, n) \
             ORDER BY n \
             RETURNING id, seq",
        )
        .bind(fresh.iter().map(|m| m.id.0).collect::<Vec<_>>())
        .bind(fresh.iter().map(|m| m.contact_id.0).collect::<Vec<_>>())
        .bind(fresh.iter().map(|m| m.workspace_id.0).collect::<Vec<_>>())
        .bind(column(|m| m.sender.as_deref()))
        .bind(column(|m| Some(m.body.as_str())))
        .bind(column(|m| Some(m.direction.as_str())))
        .bind(column(|m| Some(m.status.as_str())))
        .bind(column(|m| m.twilio_sid.as_deref()))
        .bind(column(|m| Some(m.msg_type.as_str())))
        .bind(fresh.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .bind(column(|m| m.client_id.as_deref()))
        .bind(column(|m| m.moderation_flag.as_deref()))
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| map_insert_err(e, "contact", "message"))?;
        let mut seq_of: HashMap<Uuid, i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            seq_of.insert(
                row.try_get("id").map_err(map_err)?,
                row.try_get("seq").map_err(map_err)?,
            );
        }
        let seqs = fresh
            .iter()
            .map(|m| seq_of.get(&m.id.0).copied())
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| StoreError::Corrupt("an inserted row without its seq".into()))?;
        Ok((plan, seqs))
    }

    async fn append_in(
        tx: &mut Transaction<'static, Postgres>,
        new: NewMessage,
    ) -> Result<Appended, StoreError> {
        if let Some(client_id) = &new.client_id
            && let Some(existing) = Self::find_by_client_id(tx, new.workspace_id, client_id).await?
        {
            return Ok(Appended::Duplicate(existing));
        }
        // A savepoint per message: a failed statement would otherwise abort the whole
        // batch, and a concurrent duplicate must give back the counter it bumped.
        let mut savepoint = tx.begin().await.map_err(map_err)?;
        let inserted = sqlx::query(
            "INSERT INTO livechat_messages (id, contact_id, workspace_id, sender, body, is_read, \
             direction, status, twilio_sid, msg_type, created_at, client_id, moderation_flag) \
             VALUES ($1, $2, $3, $4, $5, false, $6, $7, $8, $9, $10, $11, $12) \
             RETURNING seq",
        )
        .bind(new.id.0)
        .bind(new.contact_id.0)
        .bind(new.workspace_id.0)
        .bind(&new.sender)
        .bind(&new.body)
        .bind(new.direction.as_str())
        .bind(new.status.as_str())
        .bind(&new.twilio_sid)
        .bind(new.msg_type.as_str())
        .bind(new.created_at)
        .bind(&new.client_id)
        .bind(&new.moderation_flag)
        .fetch_one(&mut *savepoint)
        .await;
        match inserted {
            Ok(row) => {
                let seq: i64 = row.try_get("seq").map_err(map_err)?;
                savepoint.commit().await.map_err(map_err)?;
                Ok(Appended::Inserted(new.into_message(seq)))
            }
            Err(e) => {
                savepoint.rollback().await.map_err(map_err)?;
                let duplicate_key = e.as_database_error().is_some_and(|db| {
                    db.is_unique_violation()
                        && db.constraint() == Some("livechat_messages_workspace_id_client_id_key")
                });
                match (&new.client_id, duplicate_key) {
                    // Another node stored the same key first; its commit is visible now.
                    (Some(client_id), true) => {
                        Self::find_by_client_id(tx, new.workspace_id, client_id)
                            .await?
                            .map(Appended::Duplicate)
                            .ok_or_else(|| {
                                StoreError::Corrupt("a duplicate key with no row".into())
                            })
                    }
                    _ => Err(map_insert_err(e, "contact", "message")),
                }
            }
        }
    }
}

impl MessageStore for PostgresStore {
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let mut results = self.append_batch(vec![message]).await;
        results
            .pop()
            .unwrap_or(Err(StoreError::Corrupt("empty batch result".into())))
    }

    async fn append_batch(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let n = messages.len();
        let failed_all = |e: &sqlx::Error| (0..n).map(|_| Err(map_err_ref(e))).collect::<Vec<_>>();
        let mut messages = messages;
        // Postgres keeps microseconds: round first, so the message handed back is the
        // message a later read returns.
        for m in &mut messages {
            m.created_at = m.created_at.trunc_subsecs(6);
        }
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return failed_all(&e),
        };
        // Set-wise first: two statements whatever the batch size. A batch it cannot
        // take whole (an unknown contact, a key another node stored a moment ago) is
        // rolled back and goes in message by message, each in its own savepoint.
        let results = match Self::append_set(&mut tx, &messages).await {
            Ok((plan, seqs)) => plan.finish(messages, &seqs),
            Err(_) => {
                if let Err(e) = tx.rollback().await {
                    return failed_all(&e);
                }
                tx = match self.pool.begin().await {
                    Ok(tx) => tx,
                    Err(e) => return failed_all(&e),
                };
                let mut results = Vec::with_capacity(n);
                for m in messages {
                    results.push(Self::append_in(&mut tx, m).await);
                }
                results
            }
        };
        if let Err(e) = tx.commit().await {
            return failed_all(&e);
        }
        results
    }

    async fn history(
        &self,
        contact: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let rows = sqlx::query(select_messages!(
            "WHERE contact_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(contact.0)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut page = page_from_rows(rows, limit)?;
        self.attach_reactions(&mut page.messages).await?;
        Ok(page)
    }

    async fn sync(&self, scope: SyncScope, after: i64, limit: u32) -> Result<Page, StoreError> {
        let (query, id) = match scope {
            SyncScope::Workspace(id) => (
                select_messages!("WHERE workspace_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"),
                id.0,
            ),
            SyncScope::Contact(id) => (
                select_messages!("WHERE contact_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"),
                id.0,
            ),
        };
        let rows = sqlx::query(query)
            .bind(id)
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let mut page = page_from_rows(rows, limit)?;
        self.attach_reactions(&mut page.messages).await?;
        Ok(page)
    }

    async fn last_seq(&self, workspace: WorkspaceId) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM workspaces WHERE id = $1")
            .bind(workspace.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(seq.unwrap_or(0))
    }

    async fn mark_read(&self, contact: ContactId, up_to: i64) -> Result<u64, StoreError> {
        sqlx::query(
            "UPDATE livechat_messages SET is_read = true \
             WHERE contact_id = $1 AND seq <= $2 AND NOT is_read",
        )
        .bind(contact.0)
        .bind(up_to)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(map_err)
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        let row = sqlx::query(select_messages!("WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        self.one_with_reactions(row).await
    }

    async fn update_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        twilio_sid: Option<String>,
    ) -> Result<Option<Message>, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let row = sqlx::query(
            "UPDATE livechat_messages SET status = $1, twilio_sid = COALESCE($2, twilio_sid) \
             WHERE id = $3 AND status = ANY($4) \
             RETURNING id, contact_id, workspace_id, sender, body, is_read, direction, status, \
             twilio_sid, msg_type, created_at, seq, client_id, moderation_flag",
        )
        .bind(status.as_str())
        .bind(twilio_sid)
        .bind(id.0)
        .bind(from)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        self.one_with_reactions(row).await
    }

    async fn toggle_reaction(
        &self,
        message: MessageId,
        reaction: Reaction,
        max_per_user: usize,
    ) -> Result<Toggled, StoreError> {
        let user = reaction.user_id.as_str();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Locks the message row, so that two toggles of one user cannot both pass
        // the count below.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM livechat_messages WHERE id = $1 FOR UPDATE")
                .bind(message.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound("message"));
        }
        let removed = sqlx::query(
            "DELETE FROM message_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
        )
        .bind(message.0)
        .bind(user)
        .bind(&reaction.emoji)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        let toggled = if removed > 0 {
            Toggled::Removed
        } else {
            let mine: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM message_reactions WHERE message_id = $1 AND user_id = $2",
            )
            .bind(message.0)
            .bind(user)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            if usize::try_from(mine).unwrap_or(usize::MAX) >= max_per_user {
                return Ok(Toggled::Full);
            }
            sqlx::query(
                "INSERT INTO message_reactions (message_id, user_id, emoji) VALUES ($1, $2, $3)",
            )
            .bind(message.0)
            .bind(user)
            .bind(&reaction.emoji)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            Toggled::Added
        };
        tx.commit().await.map_err(map_err)?;
        Ok(toggled)
    }

    async fn message_by_twilio_sid(&self, sid: &str) -> Result<Option<Message>, StoreError> {
        let row = sqlx::query(select_messages!("WHERE twilio_sid = $1 LIMIT 1"))
            .bind(sid)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        self.one_with_reactions(row).await
    }

    async fn claim_due_sms(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<(Message, u32)>, StoreError> {
        // SKIP LOCKED: nodes claiming at the same moment take different messages.
        let rows = sqlx::query(
            "UPDATE livechat_messages SET sms_attempts = sms_attempts + 1, sms_next_at = $2 \
             WHERE id IN (SELECT id FROM livechat_messages \
                 WHERE status = 'queued' AND msg_type = 'sms' AND direction = 'outbound' \
                 AND (sms_next_at IS NULL OR sms_next_at <= $1) \
                 ORDER BY created_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, contact_id, workspace_id, sender, body, is_read, direction, status, \
             twilio_sid, msg_type, created_at, seq, client_id, moderation_flag, sms_attempts",
        )
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let attempts: i32 = r.try_get("sms_attempts").map_err(map_err)?;
                Ok((message_from_row(r)?, u32::try_from(attempts).unwrap_or(0)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|(m, _)| (m.created_at, m.seq));
        Ok(claimed)
    }

    async fn retry_sms_at(&self, id: MessageId, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE livechat_messages SET sms_next_at = $1 WHERE id = $2 AND status = 'queued'",
        )
        .bind(at)
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn unread_counts(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Vec<(ContactId, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact_id, COUNT(*) AS unread FROM livechat_messages \
             WHERE workspace_id = $1 AND NOT is_read AND direction = 'inbound' \
             GROUP BY contact_id",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let unread: i64 = r.try_get("unread").map_err(map_err)?;
                Ok((
                    ContactId(r.try_get("contact_id").map_err(map_err)?),
                    u64::try_from(unread).unwrap_or(0),
                ))
            })
            .collect()
    }
}

impl PostgresStore {
    /// Fills in the reactions of `messages` with one read.
    async fn attach_reactions(&self, messages: &mut [Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = messages.iter().map(|m| m.id.0).collect();
        let rows = sqlx::query(
            "SELECT message_id, user_id, emoji FROM message_reactions \
             WHERE message_id = ANY($1) ORDER BY created_at, user_id, emoji",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        if rows.is_empty() {
            return Ok(());
        }
        let reactions = rows
            .iter()
            .map(|r| {
                Ok((
                    MessageId(r.try_get("message_id").map_err(map_err)?),
                    Reaction {
                        emoji: r.try_get("emoji").map_err(map_err)?,
                        user_id: UserId(r.try_get("user_id").map_err(map_err)?),
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        batch::attach_reactions(messages, reactions);
        Ok(())
    }

    async fn one_with_reactions(&self, row: Option<PgRow>) -> Result<Option<Message>, StoreError> {
        let Some(row) = row else { return Ok(None) };
        let mut message = [message_from_row(&row)?];
        self.attach_reactions(&mut message).await?;
        let [message] = message;
        Ok(Some(message))
    }
}

impl Directory for PostgresStore {
    async fn create_workspace(&self, new: NewWorkspace) -> Result<Workspace, StoreError> {
        let created_at = chrono::Utc::now().trunc_subsecs(6);
        sqlx::query("INSERT INTO workspaces (id, name, phone, created_at) VALUES ($1, $2, $3, $4)")
            .bind(new.id.0)
            .bind(&new.name)
            .bind(&new.phone)
            .bind(created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| map_insert_err(e, "workspace", "workspace"))?;
        Ok(Workspace {
            id: new.id,
            name: new.name,
            phone: new.phone,
            created_at,
        })
    }

    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        let row = sqlx::query("SELECT id, name, phone, created_at FROM workspaces WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn create_contact(&self, new: NewContact) -> Result<Contact, StoreError> {
        let created_at = chrono::Utc::now().trunc_subsecs(6);
        sqlx::query(
            "INSERT INTO contacts (id, workspace_id, name, phone, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new.id.0)
        .bind(new.workspace_id.0)
        .bind(&new.name)
        .bind(&new.phone)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| map_insert_err(e, "workspace", "contact"))?;
        Ok(Contact {
            id: new.id,
            workspace_id: new.workspace_id,
            name: new.name,
            phone: new.phone,
            created_at,
        })
    }

    async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query(
            "SELECT id, workspace_id, name, phone, created_at FROM contacts WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(contact_from_row).transpose()
    }

    async fn contacts(
        &self,
        workspace: WorkspaceId,
        limit: u32,
    ) -> Result<Vec<Contact>, StoreError> {
        // `COLLATE "C"`: byte order, as SQLite and Rust compare text, whatever the
        // database's locale; uuids compare by their bytes, as Rust's `Uuid` does.
        let rows = sqlx::query(
            "SELECT id, workspace_id, name, phone, created_at FROM contacts \
             WHERE workspace_id = $1 ORDER BY name COLLATE \"C\", id LIMIT $2",
        )
        .bind(workspace.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(contact_from_row).collect()
    }

    async fn workspace_by_phone(&self, phone: &str) -> Result<Option<Workspace>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, phone, created_at FROM workspaces WHERE phone = $1")
                .bind(phone)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn contact_for_phone(
        &self,
        workspace: WorkspaceId,
        phone: &str,
    ) -> Result<Contact, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Serializes the creators of one (workspace, number) across every node, without
        // holding up anything else of the workspace.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("livechat:contact:{workspace}:{phone}"))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let found = sqlx::query(
            "SELECT id, workspace_id, name, phone, created_at FROM contacts \
             WHERE workspace_id = $1 AND phone = $2 ORDER BY created_at LIMIT 1",
        )
        .bind(workspace.0)
        .bind(phone)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if let Some(row) = found {
            return contact_from_row(&row);
        }
        let contact = Contact {
            id: ContactId::new_v4(),
            workspace_id: workspace,
            name: phone.to_owned(),
            phone: Some(phone.to_owned()),
            created_at: chrono::Utc::now().trunc_subsecs(6),
        };
        sqlx::query(
            "INSERT INTO contacts (id, workspace_id, name, phone, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(contact.id.0)
        .bind(workspace.0)
        .bind(&contact.name)
        .bind(&contact.phone)
        .bind(contact.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_insert_err(e, "workspace", "contact"))?;
        tx.commit().await.map_err(map_err)?;
        Ok(contact)
    }

    async fn add_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(workspace.0)
        .bind(user.as_str())
        .bind(role.as_str())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(|e| map_insert_err(e, "workspace", "member"))
    }

    async fn remove_member(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace.0)
            .bind(user.as_str())
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(map_err)
    }

    async fn member_role(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<Option<Role>, StoreError> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace.0)
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        role.map(|r| {
            r.parse()
                .map_err(|e: crate::model::UnknownVariant| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }
}

fn page_from_rows(rows: Vec<PgRow>, limit: u32) -> Result<Page, StoreError> {
    let has_more = rows.len() > limit as usize;
    let messages = rows
        .iter()
        .take(limit as usize)
        .map(message_from_row)
        .collect::<Result<_, _>>()?;
    Ok(Page { messages, has_more })
}

fn workspace_from_row(r: &PgRow) -> Result<Workspace, StoreError> {
    Ok(Workspace {
        id: WorkspaceId(r.try_get("id").map_err(map_err)?),
        name: r.try_get("name").map_err(map_err)?,
        phone: r.try_get("phone").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
    })
}

fn contact_from_row(r: &PgRow) -> Result<Contact, StoreError> {
    Ok(Contact {
        id: ContactId(r.try_get("id").map_err(map_err)?),
        workspace_id: WorkspaceId(r.try_get("workspace_id").map_err(map_err)?),
        name: r.try_get("name").map_err(map_err)?,
        phone: r.try_get("phone").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
    })
}

fn message_from_row(r: &PgRow) -> Result<Message, StoreError> {
    Ok(Message {
        id: MessageId(r.try_get("id").map_err(map_err)?),
        contact_id: ContactId(r.try_get("contact_id").map_err(map_err)?),
        workspace_id: WorkspaceId(r.try_get("workspace_id").map_err(map_err)?),
        sender: r.try_get("sender").map_err(map_err)?,
        body: r.try_get("body").map_err(map_err)?,
        is_read: r.try_get("is_read").map_err(map_err)?,
        direction: parse(r, "direction")?,
        status: parse(r, "status")?,
        twilio_sid: r.try_get("twilio_sid").map_err(map_err)?,
        msg_type: parse(r, "msg_type")?,
        created_at: r.try_get("created_at").map_err(map_err)?,
        seq: r.try_get("seq").map_err(map_err)?,
        client_id: r.try_get("client_id").map_err(map_err)?,
        moderation_flag: r.try_get("moderation_flag").map_err(map_err)?,
        reactions: Vec::new(),
    })
}

fn parse<T>(row: &PgRow, column: &str) -> Result<T, StoreError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column).map_err(map_err)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column} = {text:?}: {e}")))
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Postgres SQLSTATE classes that mean "try again later": connection exceptions (08),
/// insufficient resources (53), operator intervention such as a shutdown (57), and
/// serialization failures or deadlocks (40).
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            ["08", "53", "57", "40"]
                .iter()
                .any(|class| c.starts_with(class))
        }),
        _ => false,
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable(Box::new(e))
    } else {
        backend(e)
    }
}

fn map_err_ref(e: &sqlx::Error) -> StoreError {
    // sqlx errors are not Clone: keep the text, with the same classification.
    let text: Box<dyn std::error::Error + Send + Sync> = e.to_string().into();
    if is_transient(e) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// Maps an insert's failure: a broken foreign key means `missing` does not exist,
/// a unique violation is a conflict.
fn map_insert_err(e: sqlx::Error, missing: &'static str, existing: &'static str) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_foreign_key_violation() {
            return StoreError::NotFound(missing);
        }
        if db.is_unique_violation() {
            return StoreError::Conflict(existing);
        }
    }
    map_err(e)
}
