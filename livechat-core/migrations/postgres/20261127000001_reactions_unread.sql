-- Reactions: one row per (message, user, emoji); sending the same again removes it.
CREATE TABLE message_reactions (
    message_id uuid NOT NULL REFERENCES livechat_messages (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    emoji      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);

-- Unread counts read only inbound messages not read yet: a partial index holds just
-- those, so it stays small and a send of an agent's reply does not touch it.
CREATE INDEX livechat_messages_unread ON livechat_messages (workspace_id, contact_id)
    WHERE NOT is_read AND direction = 'inbound';
