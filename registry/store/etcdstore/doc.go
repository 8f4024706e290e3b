// Package etcdstore is the registry's replicated store: several control
// planes share one registry through etcd. It implements
// registry.Follower (and so registry.Store) and registry.Snapshotter as a
// replicated log under a key prefix, with etcd's transactions as the only
// commit point and etcd's watch as the replication stream.
//
// It uses go.etcd.io/etcd/client/v3 v3.7, which speaks the v3 API of
// every etcd server from 3.4 on (the tests run Debian's etcd-server 3.4).
//
// # Layout
//
// Under the prefix (default "/cryptomesh/"), with revisions zero-padded
// to 20 digits so that key order is revision order:
//
//	head                          "<rev>/<record ID>" of the newest committed record
//	log/<rev>                     one record: 'R' + the record (inline), or
//	                              'B' + a reference to its blob chunks
//	blob/<rev>/<record ID>/<n>    chunk n of a record too large for one request
//	snap/<rev>                    a snapshot header: the ID of the record at rev,
//	                              and where its chunks are, how many, their checksum
//	snapchunk/<rev>/<snap ID>/<n> chunk n of that snapshot's entities
//
// Values are a compact binary encoding (codec.go): a tag byte, a format
// version, then uvarints and length-prefixed strings; mutation values are
// the registry's JSON as it is.
//
// # Committing
//
// The registry appends records in revision order, each naming its Parent,
// the ID of the record it was resolved on. A committer goroutine takes
// everything queued, groups records that chain (each one's Parent is its
// predecessor's ID) into one transaction, within etcd's per-request
// limits (--max-txn-ops 128, --max-request-bytes 1.5 MiB by default), and
// runs one transaction at a time:
//
//	If(head == "<first.Rev-1>/<first.Parent>")
//	Then(Put log/<rev> for each record, Put head "<last.Rev>/<last.ID>")
//	Else(Get head, Get log/<last.Rev>)
//
// The compare is the commit rule: a record commits only on top of the
// newest committed record, so of two replicas resolving on the same state
// exactly one wins; the other's records, and every queued record resolved
// on top of them, fail with *registry.ConflictError{Head}, and the
// registry resolves the write again once it has applied the winner. The
// log and the head change in one transaction, so they always agree.
//
// A call that fails with an unknown outcome (etcd down, a connection lost
// mid-request, a timeout) is retried with the same transaction until it
// is resolved or the commit timeout passes. Retrying is safe because head
// values never repeat (record IDs are unique): if the lost attempt did
// commit, the retry fails its compare and finds log/<last.Rev> holding
// the batch's own record, which counts as success; if it did not, the
// retry is the commit. A record's Wait therefore returns nil or a
// conflict exactly as committed, never a guess. It returns another error
// only when etcd stays unreachable past the commit timeout (default one
// minute: the outcome is then unknown), when etcd refuses the request for
// good (authentication, a full database), or when the store is closed;
// the registry then stops taking writes, and a restarted control plane
// loads what etcd really holds. A caller whose context ends first (the
// server gives every request --request-timeout) is answered 503 while the
// committer goes on resolving its record, so a short etcd outage is
// invisible to the registry: writes made meanwhile commit, in order, when
// etcd is back.
//
// If etcd refuses a transaction as too large (its --max-txn-ops or
// --max-request-bytes below what WithTxnLimits says), the committer halves
// its limits and splits the batch rather than fail.
//
// A record larger than one request (a mesh document of thousands of
// functions) is written first as chunks under blob/<rev>/<ID>/, outside
// the transaction, and its log entry references them with their size and
// CRC-32C. The chunks are invisible until that entry commits, so the
// record is still all-or-nothing; chunks of refused commits are deleted,
// and those of crashed ones go with the snapshot that passes their
// revision.
//
// # Following
//
// Load reads the newest snapshot and the log after it, all at the etcd
// revision of its first read, so a concurrent snapshot (which deletes old
// entries) cannot tear it. Follow then watches log/ from that etcd
// revision and delivers every put, in order, this replica's own records
// included. A broken watch resumes from the etcd revision of the last
// delivered entry (several entries of one transaction share it, so
// entries already delivered are skipped by their log revision); etcd
// replays its history, deleted keys included. If etcd has compacted that
// history, Follow re-reads the newest snapshot and the log and delivers
// them as one Reset record holding the whole registry.
//
// Head is a linearizable Get of the head key.
//
// # Snapshots
//
// Snapshot writes the entities as chunks under a fresh snapshot ID, then
// creates the header snap/<rev> if no replica did first (losers delete
// their chunks), then deletes, in one transaction, older snapshots and
// their chunks, and log entries and blobs more than the log retention
// (default 1000) below rev. The retention keeps the entries a retried
// commit needs to recognise its own record. Blobs are keyed by revision,
// so the same range deletes the orphans of refused or crashed commits: no
// record at or below rev can commit any more, since the head is past it.
//
// The store deletes keys but does not compact etcd's history: compaction
// is cluster-wide, and the prefix may share etcd with others. Run etcd
// with --auto-compaction-retention (Kubernetes' apiserver compacts every
// five minutes); followers that fall behind a compaction re-list.
package etcdstore
