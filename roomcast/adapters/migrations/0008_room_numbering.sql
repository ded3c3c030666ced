-- The number the next created room gets. Rooms that open mode's join_room
-- creates under an id of the client's choosing never move it, so one id near
-- the top of the range cannot use up the numbering; a created room steps over
-- the ids such rooms took (see adapters/sql/rooms.py).
CREATE TABLE room_numbering (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_id BIGINT NOT NULL
);

INSERT INTO room_numbering (id, next_id)
SELECT 1, COALESCE(MAX(id), 0) + 1 FROM rooms WHERE id < 9007199254740991;
