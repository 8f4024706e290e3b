package filestore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cryptomesh/cryptomesh/registry"
)

const (
	// frameHeaderSize is the length and checksum fields in front of every
	// payload.
	frameHeaderSize = 8
	// maxFramePayload caps one frame so that a hostile or corrupt length
	// field can never make a reader allocate more than this (and never more
	// than the bytes the file really holds).
	maxFramePayload = 256 << 20
)

// maxTornTail is the longest tail that Load will call torn. A torn tail is
// part of one group write, which is far shorter in practice (a batch of
// the records that queued up during one fsync); past this, damage is
// reported as corruption instead.
const maxTornTail = 1 << 30

// Payload tags: the first byte of every frame payload says what it holds,
// and doubles as the format version of that payload.
const (
	tagRecord       = 'R' // a registry.Record in a log segment
	tagSnapshotHead = 'H' // first frame of a snapshot: its revision
	tagSnapshotItem = 'M' // one live entity of a snapshot
	tagSnapshotEnd  = 'E' // last frame of a snapshot: the entity count
)

// minMutationSize is the smallest encoding of a mutation (four one-byte
// varints); it bounds how many mutations a payload can claim to hold.
const minMutationSize = 4

// castagnoli is the CRC-32C table, read-only after initialisation.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frameChecksum covers the length field as well as the payload, so that a
// corrupt length cannot pair a stale checksum with the wrong bytes.
func frameChecksum(header, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(header[:4], castagnoli), castagnoli, payload)
}

// beginFrame reserves room for a frame header at the end of b; the payload
// is appended after it and sealFrame fills the header in.
func beginFrame(b []byte) []byte {
	return append(b, make([]byte, frameHeaderSize)...)
}

// sealFrame fills in the header of frame, which starts with the space
// beginFrame reserved and continues with the whole payload.
func sealFrame(frame []byte) error {
	n := len(frame) - frameHeaderSize
	if n > maxFramePayload {
		return fmt.Errorf("frame payload of %d bytes exceeds the %d byte limit", n, maxFramePayload)
	}
	binary.LittleEndian.PutUint32(frame[0:4], uint32(n))
	binary.LittleEndian.PutUint32(frame[4:8], frameChecksum(frame[:4], frame[frameHeaderSize:]))
	return nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendMutation(b []byte, m registry.Mutation) []byte {
	b = appendString(b, string(m.Kind))
	b = appendString(b, m.ID)
	b = binary.AppendUvarint(b, m.Seq)
	return appendBytes(b, m.Value)
}

// appendRecordPayload encodes rec as a log payload: tag, revision, count,
// then each mutation as kind, id, seq and value (length-prefixed; an empty
// value is a delete).
func appendRecordPayload(b []byte, rec registry.Record) []byte {
	b = append(b, tagRecord)
	b = binary.AppendUvarint(b, rec.Rev)
	b = binary.AppendUvarint(b, uint64(len(rec.Mutations)))
	for _, m := range rec.Mutations {
		b = appendMutation(b, m)
	}
	return b
}

// appendRecordFrame appends rec as one complete frame.
func appendRecordFrame(b []byte, rec registry.Record) ([]byte, error) {
	start := len(b)
	b = appendRecordPayload(beginFrame(b), rec)
	if err := sealFrame(b[start:]); err != nil {
		return b[:start], err
	}
	return b, nil
}

// decoder reads the fields of one payload; every read is bounds-checked
// against what is left, so hostile input fails instead of panicking or
// allocating.
type decoder struct {
	b   []byte
	err error
}

var errShortPayload = errors.New("payload ends inside a field")

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShortPayload
		if n < 0 {
			d.err = errors.New("varint overflows 64 bits")
		}
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
		d.err = fmt.Errorf("field claims %d bytes but only %d remain", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) mutation() registry.Mutation {
	kind := d.bytes()
	id := d.bytes()
	seq := d.uvarint()
	value := d.bytes()
	if d.err != nil {
		return registry.Mutation{}
	}
	m := registry.Mutation{Kind: registry.Kind(kind), ID: string(id), Seq: seq}
	if len(value) > 0 {
		// The slice aliases the frame's own buffer, which is never reused.
		m.Value = value
	}
	return m
}

func (d *decoder) finish(what string) error {
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d stray bytes after the %s", len(d.b), what)
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", what, d.err)
	}
	return nil
}

// decodeRecordPayload is the inverse of appendRecordPayload.
func decodeRecordPayload(p []byte) (registry.Record, error) {
	if len(p) == 0 || p[0] != tagRecord {
		return registry.Record{}, fmt.Errorf("decode record: payload is not a record (tag %q)", firstByte(p))
	}
	d := decoder{b: p[1:]}
	rec := registry.Record{Rev: d.uvarint()}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minMutationSize) {
		d.err = fmt.Errorf("record claims %d mutations in %d bytes", n, len(d.b))
	}
	if d.err == nil && n > 0 {
		rec.Mutations = make([]registry.Mutation, 0, n)
		for range n {
			m := d.mutation()
			if d.err != nil {
				break
			}
			rec.Mutations = append(rec.Mutations, m)
		}
	}
	if err := d.finish("record"); err != nil {
		return registry.Record{}, err
	}
	if rec.Rev == 0 {
		return registry.Record{}, errors.New("decode record: revision 0 (revisions start at 1)")
	}
	return rec, nil
}

func firstByte(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	return string(p[:1])
}

// CorruptError reports stored data that fails its checksum or structure
// checks where a torn final write cannot explain it. Load refuses to start
// on it rather than silently dropping acknowledged records.
type CorruptError struct {
	Path   string // the file
	Offset int64  // byte offset of the bad frame in the file
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("filestore: %s: corrupt data at byte offset %d: %s", e.Path, e.Offset, e.Reason)
}

// tornError reports an incomplete final frame: what a crash in the middle
// of a write leaves behind. Only the newest log segment may end in one.
type tornError struct {
	Offset int64
	Reason string
}

func (e *tornError) Error() string {
	return fmt.Sprintf("torn frame at byte offset %d: %s", e.Offset, e.Reason)
}

// frameReader reads the frames of a file that holds size bytes. It never
// allocates more than the smaller of maxFramePayload and the bytes left in
// the file, whatever a length field says.
type frameReader struct {
	path string
	r    io.Reader
	size int64
	off  int64 // offset of the next frame
	hdr  [frameHeaderSize]byte
}

func newFrameReader(path string, r io.Reader, size int64) *frameReader {
	// Small files (most snapshots, fresh segments) get a small buffer.
	return &frameReader{path: path, r: bufio.NewReaderSize(r, int(min(max(size, 16), 256<<10))), size: size}
}

// next returns the next frame's payload and offset. At a clean end it
// returns io.EOF; for an incomplete or unverifiable final frame a
// *tornError; for damage before the end a *CorruptError.
func (fr *frameReader) next() ([]byte, int64, error) {
	off := fr.off
	remaining := fr.size - off
	if remaining == 0 {
		return nil, off, io.EOF
	}
	if remaining < frameHeaderSize {
		return nil, off, &tornError{off, fmt.Sprintf("incomplete frame header (%d of %d bytes)", remaining, frameHeaderSize)}
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return nil, off, fr.readErr(off, err)
	}
	n := int64(binary.LittleEndian.Uint32(fr.hdr[0:4]))
	body := remaining - frameHeaderSize
	if n > body {
		return nil, off, fr.damaged(off, nil, fmt.Sprintf("frame length %d runs past the end of the file (%d bytes present)", n, body))
	}
	if n > maxFramePayload {
		return nil, off, fr.corrupt(off, "frame length %d exceeds the %d byte limit", n, maxFramePayload)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(fr.r, payload); err != nil {
		return nil, off, fr.readErr(off, err)
	}
	if frameChecksum(fr.hdr[:], payload) != binary.LittleEndian.Uint32(fr.hdr[4:8]) {
		if n == body {
			return nil, off, &tornError{off, "checksum mismatch on the final frame"}
		}
		return nil, off, fr.damaged(off, payload, "checksum mismatch")
	}
	fr.off = off + frameHeaderSize + n
	return payload, off, nil
}

// damaged classifies a bad frame at off that the file does not end with
// (a length past the end, or a checksum mismatch with bytes after it).
// A torn write looks like that: its prefix reached the disk and the rest
// is missing, or garbage or zeros where the file was extended but not
// written. A corrupt frame in the middle of the log looks the same, but
// has valid frames after it. So the rest of the file is searched for a
// valid frame, from the byte after off since the length field itself may
// be what is damaged: if one is found the damage is corruption, and if
// none is, the tail is torn. consumed is what was read past the header.
func (fr *frameReader) damaged(off int64, consumed []byte, reason string) error {
	remaining := fr.size - off
	if remaining > maxTornTail {
		// No group write of the log is that long, so this is no torn
		// write; the limit also bounds the memory the search takes.
		return fr.corrupt(off, "%s, %d bytes before the end of the file", reason, remaining)
	}
	rest := make([]byte, remaining-1)
	copy(rest, fr.hdr[1:])
	copy(rest[frameHeaderSize-1:], consumed)
	if _, err := io.ReadFull(fr.r, rest[frameHeaderSize-1+len(consumed):]); err != nil {
		return fr.readErr(off, err)
	}
	if p, ok := findFrame(rest); ok {
		return fr.corrupt(off, "%s, and a valid frame follows at offset %d", reason, off+1+int64(p))
	}
	return &tornError{off, reason + ", and nothing valid follows"}
}

// findFrame reports the first position in b where a complete frame with a
// known tag and a matching checksum starts.
func findFrame(b []byte) (int, bool) {
	for p := 0; p+frameHeaderSize < len(b); p++ {
		n := int(binary.LittleEndian.Uint32(b[p : p+4]))
		end := p + frameHeaderSize + n
		if n == 0 || end > len(b) || end < p {
			continue
		}
		switch b[p+frameHeaderSize] {
		case tagRecord, tagSnapshotHead, tagSnapshotItem, tagSnapshotEnd:
		default:
			continue // cheap filter before the checksum
		}
		if frameChecksum(b[p:p+4], b[p+frameHeaderSize:end]) == binary.LittleEndian.Uint32(b[p+4:p+8]) {
			return p, true
		}
	}
	return 0, false
}

func (fr *frameReader) corrupt(off int64, format string, args ...any) *CorruptError {
	return &CorruptError{Path: fr.path, Offset: off, Reason: fmt.Sprintf(format, args...)}
}

func (fr *frameReader) readErr(off int64, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		// The file is shorter than its size said: it changed under us.
		return fmt.Errorf("filestore: read %s at offset %d: file shrank while being read: %w", fr.path, off, err)
	}
	return fmt.Errorf("filestore: read %s at offset %d: %w", fr.path, off, err)
}
