-- only: sqlite
-- SQLite's search index moves to a file of its own beside the database,
-- which its own connection writes without holding the database's write lock
-- (roomcast.adapters.sqlite_search builds it from the messages, so nothing
-- is carried over). What stays here: the edits the index has yet to take
-- in, appended by each edit's transaction, and the key that ties an index
-- file to this database (a file left from another database is rebuilt).
DROP TABLE message_search;
DROP TABLE search_state;
CREATE TABLE search_edits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL
);
CREATE TABLE search_index_key (key TEXT NOT NULL);
INSERT INTO search_index_key (key) VALUES (lower(hex(randomblob(16))));
