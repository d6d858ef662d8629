-- Why moderation flagged a message for review (NULL: not flagged).
ALTER TABLE livechat_messages ADD COLUMN moderation_flag TEXT;
