-- The seed's tables, plus seq (the resync cursor) and client_id (the idempotency key).
CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    phone      TEXT UNIQUE,
    -- The last seq handed out in this workspace; bumped in the same commit as the insert.
    last_seq   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE contacts (
    id           TEXT PRIMARY KEY NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    phone        TEXT,
    created_at   TEXT NOT NULL,
    -- Lets messages reference (contact, workspace) together, so a message can never
    -- sit in a workspace its contact does not belong to.
    UNIQUE (id, workspace_id)
);
CREATE INDEX contacts_workspace ON contacts (workspace_id);

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    user_id      TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('agent', 'admin')),
    created_at   TEXT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE livechat_messages (
    id           TEXT PRIMARY KEY NOT NULL,
    contact_id   TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    sender       TEXT,
    body         TEXT NOT NULL,
    is_read      INTEGER NOT NULL DEFAULT 0,
    direction    TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status       TEXT NOT NULL,
    twilio_sid   TEXT,
    msg_type     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    client_id    TEXT,
    FOREIGN KEY (contact_id, workspace_id) REFERENCES contacts (id, workspace_id),
    UNIQUE (workspace_id, seq),
    UNIQUE (workspace_id, client_id)
);
CREATE INDEX livechat_messages_contact_seq ON livechat_messages (contact_id, seq);
