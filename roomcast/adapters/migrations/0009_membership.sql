-- Membership is a fact of every room, public ones too, with a role and the
-- time it began; rooms get a topic, a kind ('room' or 'direct'), an archive
-- time, and for a direct room the key of its two users (so each pair has
-- one); bans keep a user out of a room.
ALTER TABLE room_members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
ALTER TABLE room_members ADD COLUMN joined_at INTEGER NOT NULL DEFAULT 0;

ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
ALTER TABLE rooms ADD COLUMN kind TEXT NOT NULL DEFAULT 'room';
ALTER TABLE rooms ADD COLUMN archived_at INTEGER;
ALTER TABLE rooms ADD COLUMN direct_key TEXT;

-- Unique where set: NULL keys (every room that is not direct) never collide.
CREATE UNIQUE INDEX rooms_by_direct_key ON rooms (direct_key);

CREATE TABLE room_bans (
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    banned_by TEXT NOT NULL,
    banned_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Existing members joined when their room was made; creators own their rooms.
UPDATE room_members SET joined_at = (
    SELECT created_at FROM rooms WHERE rooms.id = room_members.room_id
);
UPDATE room_members SET role = 'owner' WHERE EXISTS (
    SELECT 1 FROM rooms
    WHERE rooms.id = room_members.room_id AND rooms.created_by = room_members.user_id
);
INSERT INTO room_members (room_id, user_id, role, joined_at)
SELECT id, created_by, 'owner', created_at FROM rooms
WHERE private = 0 AND created_by IS NOT NULL;
