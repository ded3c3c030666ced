-- Shared files (roomcast.adapters.sql.files): each upload, the room it
-- belongs to, its type as its bytes say, and the blob (SHA-256) that holds
-- its bytes; a blob may serve several files. message_id is set when a chat
-- message attaches the file (once only); files never attached expire.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    uploader TEXT NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    blob TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    created_at BIGINT NOT NULL,
    message_id INTEGER REFERENCES messages (id) ON DELETE SET NULL
);
CREATE INDEX files_by_blob ON files (blob);
CREATE INDEX files_by_uploader ON files (uploader, created_at);
CREATE INDEX files_by_message ON files (message_id);
CREATE INDEX files_unattached ON files (created_at) WHERE message_id IS NULL;

-- A file's thumbnails, by width; their bytes are blobs too.
CREATE TABLE file_thumbnails (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    blob TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (file_id, width)
);
CREATE INDEX file_thumbnails_by_blob ON file_thumbnails (blob);
