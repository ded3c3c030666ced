-- How many rooms each user has created, for --max-rooms-per-user. The
-- transaction that creates a room raises its creator's row (and on
-- PostgreSQL that row's lock orders two nodes creating rooms for one user),
-- so the limit holds exactly, across restarts and across a cluster.
CREATE TABLE room_creators (
    user_id TEXT PRIMARY KEY,
    rooms INTEGER NOT NULL
);

INSERT INTO room_creators (user_id, rooms)
SELECT created_by, COUNT(*) FROM rooms WHERE created_by IS NOT NULL GROUP BY created_by;

-- The private rooms a user belongs to, for the room list (the primary key
-- starts with the room).
CREATE INDEX room_members_by_user ON room_members (user_id, room_id);
