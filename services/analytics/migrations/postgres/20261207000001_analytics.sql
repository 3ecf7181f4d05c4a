-- analytics (runs with search_path set to the service's schema).
-- How many events of each type happened on each day (UTC, from the event's time). A row is
-- bumped in the transaction that records the event's id in the inbox, so each event counts
-- once however often it is delivered.
CREATE TABLE daily_counts (
    day   DATE   NOT NULL,
    type  TEXT   NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (day, type)
);
-- Totals per type over all time (for operators; the API sums daily_counts over its range).
CREATE VIEW totals AS
    SELECT type, CAST(SUM(count) AS BIGINT) AS count FROM daily_counts GROUP BY type;
