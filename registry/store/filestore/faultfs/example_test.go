package faultfs_test

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore/faultfs"
)

// A store is killed by a failed fsync, the machine crashes, and a new
// store recovers what was acknowledged.
func Example() {
	ctx := context.Background()
	fsys := faultfs.New()
	st, _ := filestore.Open("/data", filestore.WithFS(fsys))
	_ = st.Load(ctx, func(registry.Record) error { return nil })

	p, _ := st.Append(registry.Record{Rev: 1})
	fmt.Println("revision 1:", p.Wait(ctx))

	fsys.Inject(faultfs.OpSync, 1) // the next fsync fails
	p, _ = st.Append(registry.Record{Rev: 2})
	fmt.Println("revision 2 failed:", p.Wait(ctx) != nil)

	fsys.HaltAfter(0) // the process dies...
	st.Close()
	fsys.Crash(rand.New(rand.NewPCG(1, 2))) // ...and then the power goes

	st, _ = filestore.Open("/data", filestore.WithFS(fsys))
	defer st.Close()
	_ = st.Load(ctx, func(rec registry.Record) error {
		if rec.Rev == 1 {
			fmt.Println("recovered revision 1")
		}
		return nil
	})
	// Output:
	// revision 1: <nil>
	// revision 2 failed: true
	// recovered revision 1
}
