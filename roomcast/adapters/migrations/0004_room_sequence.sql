-- A sequence number per room: 1, 2, 3, ... in commit order, without gaps.
-- Message ids are unique across rooms, so within one room they skip; with
-- several server processes writing to one room a receiver needs a number it
-- can tell a missed message by. rooms.last_seq is the newest one handed out:
-- the transaction that stores messages raises it, which (on PostgreSQL) is
-- also the lock that keeps two writers of one room in order.
ALTER TABLE rooms ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;

-- Nullable only because a column added to filled tables starts empty; every
-- message stored from now on gets one.
ALTER TABLE messages ADD COLUMN seq INTEGER;

-- Messages stored before this migration are numbered in id order.
UPDATE messages SET seq = numbered.n
FROM (
    SELECT id, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY id) AS n FROM messages
) AS numbered
WHERE messages.id = numbered.id;

UPDATE rooms SET last_seq = (
    SELECT COALESCE(MAX(messages.seq), 0) FROM messages WHERE messages.room_id = rooms.id
);

CREATE UNIQUE INDEX messages_by_room_seq ON messages (room_id, seq);
