-- only: sqlite
-- A SQLite database has one writer, which numbers each room's messages in
-- memory (SQLiteStore._numbering), and within a room seq order is id order:
-- the (room_id, id) index answers every question about seq here, and the
-- unique (room_id, seq) index only cost a B-tree write per message.
-- PostgreSQL, with several writers and gap reads by seq, keeps it.
DROP INDEX messages_by_room_seq;
