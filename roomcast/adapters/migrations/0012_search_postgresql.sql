-- only: postgresql
-- Message search (roomcast.adapters.sql.search): each live message's search
-- document, with a pg_trgm GIN index for exact substring lookups (LIKE). The
-- documents are made in Python (roomcast.core.search), so a data step
-- indexes the messages already stored (since 0014, that version's).
-- pg_trgm is a trusted extension: a role that may create objects in the
-- database installs it; otherwise it must be installed beforehand. It is kept
-- in schema public, whatever the deployment's search_path.
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

CREATE TABLE message_search (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    doc TEXT NOT NULL
);
CREATE INDEX message_search_trigrams ON message_search USING gin (doc public.gin_trgm_ops);
