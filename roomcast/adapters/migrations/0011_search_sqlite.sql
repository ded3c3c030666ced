-- only: sqlite
-- Message search (roomcast.adapters.sql.search): each live message's search
-- document, indexed by trigrams for exact substring lookups. The documents
-- are made in Python (roomcast.core.search), so this migration's data step
-- indexes the messages already stored. case_sensitive 1: documents are folded
-- already, and FTS5 must not fold them another way than PostgreSQL.
-- columnsize=0: nothing here ranks by document length.
CREATE VIRTUAL TABLE message_search USING fts5 (
    doc,
    tokenize = 'trigram case_sensitive 1',
    columnsize = 0
);
