package filestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
)

func TestRecordCodecRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  registry.Record
	}{
		{"no mutations", registry.Record{Rev: 1}},
		{"put", registry.Record{Rev: 2, Mutations: []registry.Mutation{
			{Kind: registry.KindRole, ID: "r1", Value: []byte(`{"role_id":"r1"}`)},
		}}},
		{"delete", registry.Record{Rev: 3, Mutations: []registry.Mutation{{Kind: registry.KindService, ID: "s"}}}},
		{"history seq and odd bytes", registry.Record{Rev: math.MaxUint64, Mutations: []registry.Mutation{
			{Kind: registry.KindFunctionResult, ID: "ünïcode\x00id", Seq: math.MaxUint64, Value: []byte(" { \"a\" :\n1 } ")},
			{Kind: "", ID: "", Value: []byte{0}},
		}}},
		{"large value", registry.Record{Rev: 4, Mutations: []registry.Mutation{
			{Kind: registry.KindStorage, ID: "big", Value: bytes.Repeat([]byte("x"), 1<<20)},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame, err := appendRecordFrame([]byte("prefix"), tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			if string(frame[:6]) != "prefix" {
				t.Fatal("appendRecordFrame overwrote what it appended to")
			}
			fr := newFrameReader("t", bytes.NewReader(frame[6:]), int64(len(frame)-6))
			payload, _, err := fr.next()
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeRecordPayload(payload)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.rec) {
				t.Fatalf("decoded %+v, want %+v", got, tt.rec)
			}
			if _, _, err := fr.next(); err != io.EOF {
				t.Fatalf("after the only frame: %v, want io.EOF", err)
			}
		})
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	valid := appendRecordPayload(nil, registry.Record{Rev: 7, Mutations: []registry.Mutation{{Kind: "k", ID: "i", Value: []byte("v")}}})
	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, "not a record"},
		{"wrong tag", append([]byte{tagSnapshotItem}, valid[1:]...), "not a record"},
		{"revision zero", appendRecordPayload(nil, registry.Record{}), "revision 0"},
		{"truncated", valid[:len(valid)-1], "claims 1 bytes but only 0 remain"},
		{"stray bytes", append(bytes.Clone(valid), 1), "stray bytes"},
		{"too many mutations", binary.AppendUvarint([]byte{tagRecord, 1}, 1<<40), "claims 1099511627776 mutations"},
		{"varint overflow", append([]byte{tagRecord}, bytes.Repeat([]byte{0xff}, 11)...), "overflows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeRecordPayload(tt.payload)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("decode = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// frames encodes records 1..n.
func frames(t testing.TB, n int) []byte {
	t.Helper()
	var b []byte
	for i := 1; i <= n; i++ {
		var err error
		b, err = appendRecordFrame(b, registry.Record{Rev: uint64(i), Mutations: []registry.Mutation{
			{Kind: registry.KindRole, ID: strings.Repeat("i", i), Value: []byte(`{"x":1}`)},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestFrameReader(t *testing.T) {
	three := frames(t, 3)
	second := len(frames(t, 1))
	third := len(frames(t, 2))
	withLength := func(b []byte, at int, n uint32) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint32(b[at:], n)
		return b
	}
	flip := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 1
		return b
	}
	tests := []struct {
		name    string
		data    []byte
		frames  int
		torn    int64 // offset of a torn tail, or -1
		corrupt int64 // offset of corruption, or -1
		reason  string
	}{
		{"empty", nil, 0, -1, -1, ""},
		{"clean", three, 3, -1, -1, ""},
		{"incomplete header", three[:third+5], 2, int64(third), -1, "incomplete frame header"},
		{"length past end", three[:len(three)-1], 2, int64(third), -1, "runs past the end"},
		{"final checksum mismatch", flip(three, len(three)-1), 2, int64(third), -1, "checksum mismatch on the final frame"},
		{"middle checksum mismatch", flip(three, second+10), 1, -1, int64(second), "checksum mismatch, and a valid frame follows"},
		{"hostile length at the end", withLength(three, third, math.MaxUint32), 2, int64(third), -1, "runs past the end"},
		{"hostile length in the middle", withLength(three, second, math.MaxUint32), 1, -1, int64(second), "valid frame follows"},
		{"zero length in the middle", withLength(three, second, 0), 1, -1, int64(second), "valid frame follows"},
		{"shortened length in the middle", withLength(three, second, 3), 1, -1, int64(second), "valid frame follows"},
		{"zeros after the log", append(bytes.Clone(three), make([]byte, 64)...), 3, int64(len(three)), -1, "nothing valid follows"},
		{"garbage after the log", append(bytes.Clone(three), bytes.Repeat([]byte("garbage!"), 9)...), 3, int64(len(three)), -1, "nothing valid follows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := newFrameReader("seg", bytes.NewReader(tt.data), int64(len(tt.data)))
			n := 0
			for {
				_, _, err := fr.next()
				if err == nil {
					n++
					continue
				}
				var torn *tornError
				var ce *CorruptError
				switch {
				case err == io.EOF:
					if tt.torn >= 0 || tt.corrupt >= 0 {
						t.Fatalf("clean end, want damage at %d/%d", tt.torn, tt.corrupt)
					}
				case errors.As(err, &torn):
					if torn.Offset != tt.torn || !strings.Contains(torn.Reason, tt.reason) {
						t.Fatalf("torn at %d (%s), want torn at %d saying %q", torn.Offset, torn.Reason, tt.torn, tt.reason)
					}
				case errors.As(err, &ce):
					if ce.Offset != tt.corrupt || ce.Path != "seg" || !strings.Contains(ce.Reason, tt.reason) {
						t.Fatalf("corrupt at %d (%s), want corruption at %d saying %q", ce.Offset, ce.Reason, tt.corrupt, tt.reason)
					}
				default:
					t.Fatal(err)
				}
				break
			}
			if n != tt.frames {
				t.Fatalf("read %d frames before the end, want %d", n, tt.frames)
			}
		})
	}
}

// TestHostileLengthAllocatesLittle: a length field of 4 GiB in a tiny
// file must not make the reader allocate anywhere near that.
func TestHostileLengthAllocatesLittle(t *testing.T) {
	data := make([]byte, 64)
	binary.LittleEndian.PutUint32(data, 200<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fr := newFrameReader("seg", bytes.NewReader(data), int64(len(data)))
	_, _, err := fr.next()
	runtime.ReadMemStats(&after)
	var torn *tornError
	if !errors.As(err, &torn) {
		t.Fatalf("next = %v, want a torn frame", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("reading a 64 byte file allocated %d bytes", grew)
	}
}

// FuzzDecodeFrames feeds arbitrary bytes to the frame reader and the
// payload decoders. They must never panic, never read outside the input,
// and whatever decodes must re-encode to something that decodes the same.
func FuzzDecodeFrames(f *testing.F) {
	f.Add(frames(f, 3))
	f.Add(frames(f, 3)[:40])
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 'R'})
	f.Add(append(frames(f, 1), make([]byte, 16)...))
	snap := beginFrame(nil)
	snap = appendMutation(append(snap, tagSnapshotItem), registry.Mutation{Kind: "k", ID: "i", Seq: 3, Value: []byte("{}")})
	if err := sealFrame(snap); err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader("fuzz", bytes.NewReader(data), int64(len(data)))
		for {
			payload, off, err := fr.next()
			if err != nil {
				var torn *tornError
				var ce *CorruptError
				switch {
				case err == io.EOF:
					if fr.off != int64(len(data)) {
						t.Fatalf("EOF at %d of %d bytes", fr.off, len(data))
					}
				case errors.As(err, &torn):
					if torn.Offset != off || off > int64(len(data)) {
						t.Fatalf("torn at %d, frame at %d, %d bytes", torn.Offset, off, len(data))
					}
				case errors.As(err, &ce):
					if ce.Offset < 0 || ce.Offset > int64(len(data)) {
						t.Fatalf("corruption reported at %d of %d bytes", ce.Offset, len(data))
					}
				default:
					t.Fatalf("unexpected error from an in-memory reader: %v", err)
				}
				return
			}
			if off+frameHeaderSize+int64(len(payload)) > int64(len(data)) {
				t.Fatalf("frame at %d of %d bytes reaches past the input", off, len(data))
			}
			if len(payload) > 0 && payload[0] == tagSnapshotItem {
				d := decoder{b: payload[1:]}
				d.mutation()
				_ = d.finish("snapshot entity")
			}
			rec, err := decodeRecordPayload(payload)
			if err != nil {
				continue
			}
			frame, err := appendRecordFrame(nil, rec)
			if err != nil {
				t.Fatal(err)
			}
			again, err := decodeRecordPayload(frame[frameHeaderSize:])
			if err != nil || !reflect.DeepEqual(again, rec) {
				t.Fatalf("re-encoded record decodes to %+v, %v; want %+v", again, err, rec)
			}
		}
	})
}
