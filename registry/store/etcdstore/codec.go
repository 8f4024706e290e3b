package etcdstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Value tags. The first byte of every value names what it holds; the
// second is the format version, so that a newer control plane can change
// a layout without misreading an older one.
const (
	tagRecord   = 'R' // log/<rev>: a record, inline
	tagBlobRef  = 'B' // log/<rev>: a record stored in blob chunks
	tagSnapshot = 'S' // snap/<rev>: a snapshot header
	version1    = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a value that does not decode: a store written by
// something else under our prefix, or a bug. It is never retried.
var errCorrupt = errors.New("etcdstore: corrupt value")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
}

// appendRecord encodes rec as an inline log value:
//
//	'R' 1 uvarint(rev) str(id) str(parent) uvarint(n) n × mutation
//
// where str is a uvarint length and the bytes, and a mutation is
// str(kind) str(id) uvarint(seq) str(value) (an empty value deletes).
func appendRecord(b []byte, rec registry.Record) []byte {
	b = append(b, tagRecord, version1)
	b = binary.AppendUvarint(b, rec.Rev)
	b = appendString(b, rec.ID)
	b = appendString(b, rec.Parent)
	b = binary.AppendUvarint(b, uint64(len(rec.Mutations)))
	for _, m := range rec.Mutations {
		b = appendMutation(b, m)
	}
	return b
}

func appendMutation(b []byte, m registry.Mutation) []byte {
	b = appendString(b, string(m.Kind))
	b = appendString(b, m.ID)
	b = binary.AppendUvarint(b, m.Seq)
	b = binary.AppendUvarint(b, uint64(len(m.Value)))
	return append(b, m.Value...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// blobRef is the log value of a record too large for one etcd request:
// the record's inline encoding, split into chunks under
// blob/<rev>/<id>/<n>.
type blobRef struct {
	rev    uint64
	id     string
	parent string
	chunks uint64
	size   uint64
	crc    uint32 // CRC-32C of the whole inline encoding
}

func appendBlobRef(b []byte, r blobRef) []byte {
	b = append(b, tagBlobRef, version1)
	b = binary.AppendUvarint(b, r.rev)
	b = appendString(b, r.id)
	b = appendString(b, r.parent)
	b = binary.AppendUvarint(b, r.chunks)
	b = binary.AppendUvarint(b, r.size)
	return binary.LittleEndian.AppendUint32(b, r.crc)
}

// snapHeader is the value of snap/<rev>: the snapshot's entities are
// the concatenated mutations in the chunks under snapchunk/<rev>/<snapID>/.
type snapHeader struct {
	rev    uint64
	id     string // the ID of the record at rev, the parent of the next one
	snapID string // names this writer's chunks
	chunks uint64
	size   uint64
	count  uint64 // entities
	crc    uint32 // CRC-32C of the concatenated chunks
}

func appendSnapHeader(b []byte, h snapHeader) []byte {
	b = append(b, tagSnapshot, version1)
	b = binary.AppendUvarint(b, h.rev)
	b = appendString(b, h.id)
	b = appendString(b, h.snapID)
	b = binary.AppendUvarint(b, h.chunks)
	b = binary.AppendUvarint(b, h.size)
	b = binary.AppendUvarint(b, h.count)
	return binary.LittleEndian.AppendUint32(b, h.crc)
}

// decoder reads the primitives above, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	// Only the shortest encoding is valid, so that a value has one
	// encoding (an overlong one ends in a zero byte).
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.err = corrupt("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = corrupt("length %d past the end (%d bytes left)", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) uint32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.err = corrupt("truncated checksum")
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) header(tag byte) {
	if len(d.b) < 2 {
		d.err = corrupt("value of %d bytes", len(d.b))
		return
	}
	if d.b[0] != tag || d.b[1] != version1 {
		d.err = corrupt("tag %q version %d, want %q version %d", d.b[0], d.b[1], tag, version1)
		return
	}
	d.b = d.b[2:]
}

func (d *decoder) mutation() registry.Mutation {
	m := registry.Mutation{Kind: registry.Kind(d.string()), ID: d.string(), Seq: d.uvarint()}
	if v := d.bytes(); len(v) > 0 {
		// Copy: the registry keeps values, and b may be a large buffer.
		m.Value = append([]byte(nil), v...)
	}
	return m
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = corrupt("%d trailing bytes", len(d.b))
	}
	return d.err
}

// decodeRecord decodes an inline record.
func decodeRecord(b []byte) (registry.Record, error) {
	d := decoder{b: b}
	d.header(tagRecord)
	rec := registry.Record{Rev: d.uvarint(), ID: d.string(), Parent: d.string()}
	n := d.uvarint()
	// Every mutation takes at least four bytes, so a count beyond that is
	// damage, not a reason to allocate.
	if d.err == nil && n > uint64(len(d.b))/4 {
		return registry.Record{}, corrupt("%d mutations in %d bytes", n, len(d.b))
	}
	rec.Mutations = make([]registry.Mutation, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		rec.Mutations = append(rec.Mutations, d.mutation())
	}
	if err := d.end(); err != nil {
		return registry.Record{}, err
	}
	return rec, nil
}

func decodeBlobRef(b []byte) (blobRef, error) {
	d := decoder{b: b}
	d.header(tagBlobRef)
	r := blobRef{rev: d.uvarint(), id: d.string(), parent: d.string(), chunks: d.uvarint(), size: d.uvarint(), crc: d.uint32()}
	return r, d.end()
}

func decodeSnapHeader(b []byte) (snapHeader, error) {
	d := decoder{b: b}
	d.header(tagSnapshot)
	h := snapHeader{rev: d.uvarint(), id: d.string(), snapID: d.string(), chunks: d.uvarint(), size: d.uvarint(), count: d.uvarint(), crc: d.uint32()}
	return h, d.end()
}

// logIdentity returns the revision and record ID of a log value, inline
// or not, without decoding the mutations.
func logIdentity(b []byte) (rev uint64, id string, err error) {
	if len(b) == 0 {
		return 0, "", corrupt("empty log value")
	}
	d := decoder{b: b}
	d.header(b[0])
	if b[0] != tagRecord && b[0] != tagBlobRef {
		return 0, "", corrupt("log value tagged %q", b[0])
	}
	rev, id = d.uvarint(), d.string()
	return rev, id, d.err
}

// decodeMutations decodes count concatenated mutations (a snapshot body).
func decodeMutations(b []byte, count uint64) ([]registry.Mutation, error) {
	if count > uint64(len(b))/4 {
		return nil, corrupt("%d entities in %d bytes", count, len(b))
	}
	d := decoder{b: b}
	out := make([]registry.Mutation, 0, count)
	for i := uint64(0); i < count && d.err == nil; i++ {
		m := d.mutation()
		if d.err == nil && m.Delete() {
			return nil, corrupt("snapshot entity %s %q without a value", m.Kind, m.ID)
		}
		out = append(out, m)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return out, nil
}
