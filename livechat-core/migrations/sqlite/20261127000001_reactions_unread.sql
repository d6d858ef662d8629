-- Reactions: one row per (message, user, emoji); sending the same again removes it.
CREATE TABLE message_reactions (
    message_id TEXT NOT NULL REFERENCES livechat_messages (id),
    user_id    TEXT NOT NULL,
    emoji      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
) WITHOUT ROWID;

-- Unread counts read only inbound messages not read yet: a partial index holds just
-- those, so it stays small and a send of an agent's reply does not touch it.
CREATE INDEX livechat_messages_unread ON livechat_messages (workspace_id, contact_id)
    WHERE is_read = 0 AND direction = 'inbound';
