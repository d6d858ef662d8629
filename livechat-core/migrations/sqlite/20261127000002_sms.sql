-- The SMS outbox is the messages themselves: an outbound `sms` message waits as
-- `queued` until the gateway took it. These columns count its tries and say when the
-- next is due (milliseconds since the epoch; NULL: at once). While a node sends it,
-- `sms_next_at` holds that node's lease, so no other node sends it meanwhile.
ALTER TABLE livechat_messages ADD COLUMN sms_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE livechat_messages ADD COLUMN sms_next_at INTEGER;
CREATE INDEX livechat_messages_sms_outbox ON livechat_messages (sms_next_at)
    WHERE status = 'queued' AND msg_type = 'sms' AND direction = 'outbound';
-- Status callbacks find their message by the SID the gateway returned.
CREATE INDEX livechat_messages_twilio_sid ON livechat_messages (twilio_sid)
    WHERE twilio_sid IS NOT NULL;
-- Inbound SMS find their contact by phone number.
CREATE INDEX contacts_phone ON contacts (workspace_id, phone);
