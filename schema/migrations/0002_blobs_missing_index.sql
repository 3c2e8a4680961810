-- Migration 0002: an incremental backup reads the (few) missing blobs once instead of
-- looking up every unchanged chunk.
CREATE INDEX IF NOT EXISTS blobs_missing ON blobs (sha1) WHERE missing = 1;
