-- analytics (SQLite: days as YYYY-MM-DD text, as sqlx encodes dates); see the PostgreSQL
-- migration.
CREATE TABLE daily_counts (
    day   TEXT    NOT NULL,
    type  TEXT    NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, type)
);
CREATE VIEW totals AS
    SELECT type, CAST(SUM(count) AS INTEGER) AS count FROM daily_counts GROUP BY type;
