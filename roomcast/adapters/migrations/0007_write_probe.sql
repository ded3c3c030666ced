-- One row that a health check rewrites after write transactions failed: it
-- proves that writes commit again (a database that answers reads can still
-- refuse every write, as on a full disk), without waiting for user traffic.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    written_at BIGINT NOT NULL
);
