// Package filestore is the registry's embedded durable store: it owns the
// data directory and implements registry.Store and registry.Snapshotter on
// an append-only log of checksummed frames, with group commit and
// snapshot compaction.
//
// # On-disk format
//
// The data directory (mode 0700) holds, all files mode 0600:
//
//	LOCK                        flock'd while a store has the directory open
//	log-<index, 20 digits>      log segments; appends go to the highest index
//	snapshot-<rev, 20 digits>   the state as of revision rev
//	snapshot-<rev>.tmp          a snapshot being written; ignored and removed by Load
//
// Segments and snapshots are sequences of frames:
//
//	[length uint32 LE][CRC-32C uint32 LE][payload: length bytes]
//
// The checksum (Castagnoli) covers the length field and the payload. A
// payload is at most 256 MiB and starts with a tag byte, which doubles as
// its format version. A log segment holds 'R' frames, one per record:
// uvarint revision, uvarint mutation count, then each mutation as
// length-prefixed kind, length-prefixed id, uvarint seq, and
// length-prefixed value (empty for a delete). A snapshot is an 'H' frame
// with its revision, one 'M' frame per live entity (a mutation, encoded as
// above), and an 'E' frame with the entity count. Revisions are dense
// from 1; within a segment every record is its predecessor's revision
// plus one.
//
// # Writing
//
// Append encodes the record into a queue under the caller's lock and
// returns. One flusher goroutine repeatedly takes everything queued, writes
// it with one write, fdatasyncs the segment once, and only then completes
// the Pending of every record in that group. If a write or fsync fails the
// store is broken for good: that group and every later Append fail, and
// nothing is retried, because after a failed fsync the kernel may have
// dropped the dirty pages and a retry could report success for data that
// is gone. When a segment passes the segment size, or a snapshot asks, the
// flusher creates the next segment and fsyncs the directory before
// acknowledging any record from it.
//
// # Crash safety
//
// A record is acknowledged only after its bytes, and every earlier
// record's, have been fsynced, and only in a segment whose directory entry
// was fsynced; so a crash can only lose unacknowledged records, and only
// from the end. What a crash can leave at the end of the newest segment is
// a torn group write: a prefix of it, perhaps followed by zeros or garbage
// where the file was extended but never written. Its complete frames
// verify and are kept (they are the next records in order, so the
// recovered log is still a prefix of what was appended); its first bad
// frame and everything after it are cut off by Load, with a warning.
//
// Anything else is corruption, not a torn write: a bad frame followed by
// a valid one, or any damage in a sealed segment (which was fsynced in
// full before its successor existed). Load then stops with a
// *CorruptError naming the file and byte offset rather than silently drop
// acknowledged records. Since a damaged length field can make a frame in
// the middle look like the last one, Load searches the bytes after a bad
// frame for a valid frame before it calls the tail torn.
//
// Snapshot writes a temp file, fsyncs it, renames it into place and fsyncs
// the directory, and only then removes the segments that hold no revision
// above the snapshot's, and older snapshots. Before the rename, Load
// ignores the temp file and replays the complete log; after it, Load
// starts from the snapshot and skips the log records it covers, so it does
// not matter which of the removals a crash let through. A snapshot can
// never be legitimately torn, so a damaged one is an error, unless the log
// still holds every revision it covers; Load then recovers from the older
// snapshot and the log, with a warning.
package filestore
