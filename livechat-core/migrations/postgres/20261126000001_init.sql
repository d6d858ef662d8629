-- The seed's tables with Postgres types (uuid, timestamptz), so they can live in a
-- Supabase project, plus seq (the resync cursor) and client_id (the idempotency key).
CREATE TABLE workspaces (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    phone      text UNIQUE,
    -- The last seq handed out in this workspace. The insert trigger below bumps it in
    -- the inserting transaction; the row lock it takes is held until commit, so seq
    -- order is commit order within a workspace, across every node.
    last_seq   bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contacts (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    name         text NOT NULL,
    phone        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Lets messages reference (contact, workspace) together, so a message can never
    -- sit in a workspace its contact does not belong to.
    UNIQUE (id, workspace_id)
);
CREATE INDEX contacts_workspace ON contacts (workspace_id);

CREATE TABLE workspace_members (
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    user_id      text NOT NULL,
    role         text NOT NULL CHECK (role IN ('agent', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE livechat_messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    contact_id      uuid NOT NULL,
    workspace_id    uuid NOT NULL,
    sender          text,
    body            text NOT NULL,
    is_read         boolean NOT NULL DEFAULT false,
    direction       text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status          text NOT NULL DEFAULT 'received'
                    CHECK (status IN ('queued', 'sent', 'delivered', 'failed', 'received')),
    twilio_sid      text,
    msg_type        text NOT NULL DEFAULT 'text' CHECK (msg_type IN ('text', 'sms', 'note')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    seq             bigint NOT NULL,
    client_id       text,
    moderation_flag text,
    FOREIGN KEY (contact_id, workspace_id) REFERENCES contacts (id, workspace_id),
    UNIQUE (workspace_id, seq),
    UNIQUE (workspace_id, client_id)
);
CREATE INDEX livechat_messages_contact_seq ON livechat_messages (contact_id, seq);

-- Every insert, from livechat or from any other program, takes the next seq of its
-- workspace. A plain `INSERT ... (contact_id, workspace_id, body, direction)` is enough.
CREATE FUNCTION livechat_assign_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workspaces SET last_seq = last_seq + 1 WHERE id = NEW.workspace_id
        RETURNING last_seq INTO NEW.seq;
    IF NEW.seq IS NULL THEN
        RAISE foreign_key_violation USING MESSAGE = 'unknown workspace ' || NEW.workspace_id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER livechat_messages_seq BEFORE INSERT ON livechat_messages
    FOR EACH ROW EXECUTE FUNCTION livechat_assign_seq();

-- The change feed: every committed insert is announced on channel `livechat_messages`
-- with its workspace and seq (not the row: a NOTIFY payload is limited to 8000 bytes).
-- Listeners read the rows by seq, which also catches up anything a gap let slip.
CREATE FUNCTION livechat_notify_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'livechat_messages',
        json_build_object('workspace_id', NEW.workspace_id, 'seq', NEW.seq)::text
    );
    RETURN NULL;
END
$$;
CREATE TRIGGER livechat_messages_notify AFTER INSERT ON livechat_messages
    FOR EACH ROW EXECUTE FUNCTION livechat_notify_message();

-- A removed member is announced on `livechat_members`, so that every node evicts the
-- user's sockets from the workspace's rooms, whoever deleted the row.
CREATE FUNCTION livechat_notify_member_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'livechat_members',
        json_build_object('workspace_id', OLD.workspace_id, 'user_id', OLD.user_id)::text
    );
    RETURN NULL;
END
$$;
CREATE TRIGGER workspace_members_removed AFTER DELETE ON workspace_members
    FOR EACH ROW EXECUTE FUNCTION livechat_notify_member_removed();
