-- Migration 0005: each file's ctime as the backup saw it (NULL for backups of an older
-- pitreos). An incremental backup takes a file as unchanged only when its ctime is the
-- same too: a tool that writes a file in place and sets its mtime back changes it.
ALTER TABLE files ADD COLUMN ctime_ns INTEGER;
