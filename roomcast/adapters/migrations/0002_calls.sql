-- Every call attempt, including those that never rang (busy, unavailable, glare).
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    answered_at INTEGER,
    ended_at INTEGER,
    end_reason TEXT
);

CREATE INDEX calls_by_caller ON calls (caller, started_at);
CREATE INDEX calls_by_callee ON calls (callee, started_at);
