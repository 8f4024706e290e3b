package etcdstore

import (
	"errors"
	"reflect"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
)

func TestCodecRoundTrips(t *testing.T) {
	recs := []registry.Record{
		{Rev: 1, ID: "a"},
		{Rev: 2, ID: "b", Parent: "a", Mutations: []registry.Mutation{
			{Kind: registry.KindRole, ID: "r1", Value: []byte(`{"role_id":"r1"}`)},
			{Kind: registry.KindFunctionState, ID: "s1", Seq: 1 << 40, Value: []byte(`{}`)},
			{Kind: registry.KindRole, ID: "r0"}, // a delete
		}},
	}
	for _, rec := range recs {
		got, err := decodeRecord(appendRecord(nil, rec))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Mutations == nil {
			rec.Mutations = []registry.Mutation{}
		}
		if !reflect.DeepEqual(got, rec) {
			t.Fatalf("got %+v, want %+v", got, rec)
		}
		rev, id, err := logIdentity(appendRecord(nil, rec))
		if err != nil || rev != rec.Rev || id != rec.ID {
			t.Fatalf("identity %d %q %v", rev, id, err)
		}
	}
	ref := blobRef{rev: 7, id: "x", parent: "w", chunks: 3, size: 3 << 20, crc: 0xdeadbeef}
	if got, err := decodeBlobRef(appendBlobRef(nil, ref)); err != nil || got != ref {
		t.Fatalf("blob ref %+v %v", got, err)
	}
	if rev, id, err := logIdentity(appendBlobRef(nil, ref)); err != nil || rev != 7 || id != "x" {
		t.Fatalf("blob ref identity %d %q %v", rev, id, err)
	}
	h := snapHeader{rev: 9, id: "i", snapID: "s", chunks: 2, size: 10, count: 4, crc: 1}
	if got, err := decodeSnapHeader(appendSnapHeader(nil, h)); err != nil || got != h {
		t.Fatalf("snapshot header %+v %v", got, err)
	}
	muts := recs[1].Mutations[:2]
	var body []byte
	for _, m := range muts {
		body = appendMutation(body, m)
	}
	if got, err := decodeMutations(body, 2); err != nil || !reflect.DeepEqual(got, muts) {
		t.Fatalf("mutations %+v %v", got, err)
	}
}

func TestCodecRefusesDamage(t *testing.T) {
	good := appendRecord(nil, registry.Record{Rev: 3, ID: "id", Parent: "p", Mutations: []registry.Mutation{
		{Kind: registry.KindRole, ID: "r", Value: []byte(`{"role_id":"r"}`)},
	}})
	for name, b := range map[string][]byte{
		"empty":     {},
		"tag":       append([]byte{'X'}, good[1:]...),
		"version":   append([]byte{tagRecord, 9}, good[2:]...),
		"truncated": good[:len(good)-3],
		"trailing":  append(append([]byte(nil), good...), 0),
		"count":     append(append([]byte(nil), good[:2+1+3+2]...), 0xff, 0xff, 0x03),
	} {
		if _, err := decodeRecord(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: %v, want corrupt", name, err)
		}
	}
	body := appendMutation(nil, registry.Mutation{Kind: registry.KindRole, ID: "r"})
	if _, err := decodeMutations(body, 1); !errors.Is(err, errCorrupt) {
		t.Errorf("a snapshot entity without a value: %v", err)
	}
	if _, _, err := parseHead([]byte("12")); !errors.Is(err, errCorrupt) {
		t.Errorf("head without an ID: %v", err)
	}
}

// FuzzDecode: no input makes a decoder panic or allocate beyond its
// input, and what decodes encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(appendRecord(nil, registry.Record{Rev: 1, ID: "a", Mutations: []registry.Mutation{{Kind: "role", ID: "r", Value: []byte("{}")}}}))
	f.Add(appendBlobRef(nil, blobRef{rev: 2, id: "b", chunks: 1, size: 5}))
	f.Add(appendSnapHeader(nil, snapHeader{rev: 3, id: "c", snapID: "d"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if rec, err := decodeRecord(b); err == nil {
			if again := appendRecord(nil, rec); string(again) != string(b) {
				t.Fatalf("record re-encodes to %x, from %x", again, b)
			}
		}
		if ref, err := decodeBlobRef(b); err == nil {
			if again := appendBlobRef(nil, ref); string(again) != string(b) {
				t.Fatalf("blob ref re-encodes to %x, from %x", again, b)
			}
		}
		decodeSnapHeader(b)
		logIdentity(b)
		decodeMutations(b, uint64(len(b)/4))
	})
}
