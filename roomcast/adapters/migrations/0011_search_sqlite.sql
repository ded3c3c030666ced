-- only: sqlite
-- (Replaced by 0013: the index now lives in a file of its own.)
-- Message search (roomcast.adapters.sql.search): each live message's search
-- document, indexed by trigrams for exact substring lookups. The documents
-- are made in Python (roomcast.core.search), so this migration's data step
-- indexes the messages already stored. case_sensitive 1: documents are folded
-- already, and FTS5 must not fold them another way than PostgreSQL.
-- detail=none: no positions (a needle is checked with instr() instead), so
-- the index is a fraction of the size and its merges stay small; columnsize=0:
-- nothing here ranks by document length.
CREATE VIRTUAL TABLE message_search USING fts5 (
    doc,
    tokenize = 'trigram case_sensitive 1',
    detail = none,
    columnsize = 0
);

-- How far the index goes: new messages are indexed after their commit (see
-- SearchSQL), and every message up to this id is indexed. The data step
-- moves it across the messages already stored.
CREATE TABLE search_state (indexed_through INTEGER NOT NULL);
INSERT INTO search_state (indexed_through) VALUES (0);
