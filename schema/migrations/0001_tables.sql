-- Migration 0001: the catalog's tables, as pitreos 0.1 created them.
-- The local catalog: a mirror of every manifest in one store, and each blob's reference
-- count. It is a cache: `pitreos catalog sync` rebuilds it from the store alone.
-- pitreos applies the migrations of this folder in name order with sqlite-utils, which
-- records each one applied in _sqlite_migrations; a catalog with a migration this
-- pitreos does not know is from a newer pitreos, and is refused. Every statement is
-- idempotent, so a catalog made before migrations were recorded passes them unharmed.

-- Which store this catalog mirrors, and other settings.
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per complete backup (a manifest in the store).
CREATE TABLE IF NOT EXISTS backups (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,   -- e.g. 2026-11-26T02-00-00Z--standard
    tag           TEXT NOT NULL,
    created       TEXT NOT NULL,          -- RFC 3339, UTC
    created_unix  REAL NOT NULL,          -- the same, for range queries
    chunk_size    INTEGER NOT NULL,
    tool          TEXT NOT NULL,
    file_count    INTEGER NOT NULL,
    apparent_size INTEGER NOT NULL,       -- sum of file sizes
    data_size     INTEGER NOT NULL        -- sum of bytes in data chunks
);
CREATE INDEX IF NOT EXISTS backups_tag_created ON backups (tag, created_unix);

-- Free metadata (--meta key=value and detected values such as block).
CREATE TABLE IF NOT EXISTS backup_meta (
    backup_id INTEGER NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (backup_id, key)
) WITHOUT ROWID;

-- Every entry of every backup.
CREATE TABLE IF NOT EXISTS files (
    id        INTEGER PRIMARY KEY,
    backup_id INTEGER NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
    path      TEXT NOT NULL,
    type      TEXT NOT NULL,              -- file, dir, symlink
    size      INTEGER NOT NULL,
    mode      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    inode     INTEGER,
    target    TEXT,
    data_size INTEGER NOT NULL,
    UNIQUE (backup_id, path)
);

-- Each blob the store holds or a manifest references.
CREATE TABLE IF NOT EXISTS blobs (
    id          INTEGER PRIMARY KEY,
    sha1        TEXT NOT NULL UNIQUE,
    blake3      TEXT NOT NULL,
    size        INTEGER NOT NULL,         -- bytes of the plain chunk
    stored_size INTEGER,                  -- bytes in the store, when known
    refcount    INTEGER NOT NULL DEFAULT 0, -- chunk references from all backups
    missing     INTEGER NOT NULL DEFAULT 0, -- 1: a listing showed the store lacks it
    added_unix  REAL NOT NULL             -- when this catalog first recorded it
);

-- The data chunks of each file (empty chunks are not listed). blob_id is deliberately
-- not a foreign key: blobs.refcount already guards it (only refcount-0 rows are ever
-- deleted), and a foreign key would make deleting a blob row scan this whole table.
CREATE TABLE IF NOT EXISTS chunks (
    file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,             -- chunk number: offset = idx * chunk_size
    blob_id INTEGER NOT NULL,             -- blobs.id
    PRIMARY KEY (file_id, idx)
) WITHOUT ROWID;
