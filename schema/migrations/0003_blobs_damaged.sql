-- Migration 0003: blobs that verify found damaged. They stay marked missing (to be
-- stored again by the next backup that reads the same data) even when a listing shows
-- an object of that name, until a backup stores a good copy.
ALTER TABLE blobs ADD COLUMN damaged INTEGER NOT NULL DEFAULT 0;
