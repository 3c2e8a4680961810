-- Migration 0004: the names of backups that left the store (removed by gc here, or
-- found gone by a sync). A new backup never takes one: names have whole seconds, and a
-- backup in the second of a removed one (a fast cron, a clock set back) would otherwise
-- give its name a second meaning, to scripts and to catalogs that saw the first.
CREATE TABLE IF NOT EXISTS retired_names (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
