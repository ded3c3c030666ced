-- only: postgresql
-- Each search document carries its message's room, so a search tests who may
-- read it on the index's own rows: a count (up to its cap) then reads only
-- the index's hits, and a page joins the messages for its own rows only.
-- (The index holds live messages only: a delete takes the document out.)
-- The documents are written again by this version's data step (search.backfill),
-- which indexes every message as version 12's did.
DELETE FROM message_search;
ALTER TABLE message_search ADD COLUMN room_id INTEGER NOT NULL;
