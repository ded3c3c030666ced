-- A client's own id for a message, so that a retried send is stored once.
ALTER TABLE messages ADD COLUMN client_msg_id TEXT;

CREATE UNIQUE INDEX messages_by_client_id ON messages (user_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
