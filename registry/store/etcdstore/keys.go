package etcdstore

import (
	"fmt"
	"strconv"
	"strings"
)

// keys lays out the store under its prefix (see the package comment).
// Revisions are zero-padded to 20 digits so that etcd's byte order is
// revision order and a range [x/, x/<rev>) holds exactly the revisions
// below rev.
type keys struct{ prefix string }

func (k keys) head() string { return k.prefix + "head" }

func (k keys) logDir() string { return k.prefix + "log/" }

func (k keys) log(rev uint64) string { return fmt.Sprintf("%slog/%020d", k.prefix, rev) }

// logEnd is the end of a range that holds every log key.
func (k keys) logEnd() string { return k.prefix + "log0" } // '0' follows '/'

func (k keys) blobDir() string { return k.prefix + "blob/" }

func (k keys) blobRev(rev uint64) string { return fmt.Sprintf("%sblob/%020d", k.prefix, rev) }

// blobRecord is the directory of one record's chunks. The revision comes
// first so that every blob of the revisions a snapshot made redundant,
// committed or orphaned, is deleted with one range.
func (k keys) blobRecord(rev uint64, id string) string {
	return fmt.Sprintf("%sblob/%020d/%s/", k.prefix, rev, id)
}

func (k keys) blobChunk(rev uint64, id string, n uint64) string {
	return fmt.Sprintf("%s%06d", k.blobRecord(rev, id), n)
}

func (k keys) snapDir() string { return k.prefix + "snap/" }

func (k keys) snap(rev uint64) string { return fmt.Sprintf("%ssnap/%020d", k.prefix, rev) }

func (k keys) snapEnd() string { return k.prefix + "snap0" }

func (k keys) chunkDir() string { return k.prefix + "snapchunk/" }

func (k keys) chunkRev(rev uint64) string { return fmt.Sprintf("%ssnapchunk/%020d", k.prefix, rev) }

func (k keys) snapChunks(rev uint64, snapID string) string {
	return fmt.Sprintf("%ssnapchunk/%020d/%s/", k.prefix, rev, snapID)
}

func (k keys) snapChunk(rev uint64, snapID string, n uint64) string {
	return fmt.Sprintf("%s%06d", k.snapChunks(rev, snapID), n)
}

// revOf parses the revision of a log/<rev> or snap/<rev> key.
func revOf(key, dir string) (uint64, bool) {
	digits, ok := strings.CutPrefix(key, dir)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// headValue is the value of the head key: the newest record's revision
// and ID. Record IDs are unique, so a head value never repeats, which is
// what makes a retried commit safe (see commit.go).
func headValue(rev uint64, id string) string { return strconv.FormatUint(rev, 10) + "/" + id }

func parseHead(v []byte) (rev uint64, id string, err error) {
	r, id, ok := strings.Cut(string(v), "/")
	if !ok {
		return 0, "", corrupt("head %q", v)
	}
	rev, err = strconv.ParseUint(r, 10, 64)
	if err != nil {
		return 0, "", corrupt("head %q", v)
	}
	return rev, id, nil
}
