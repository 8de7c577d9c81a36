package memstore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/memstore"
)

// Two operators reach for the same entry: one gets it, the other learns who
// holds it; once it is finished, everyone sees how, by whom and when.
func Example() {
	st := memstore.New(nil)
	ctx := context.Background()
	k := resolution.Key{DLQ: "orders.dlq", EntryID: "a8a8601d"}

	alice, _ := st.Begin(ctx, k, "alice", time.Minute)
	bob, _ := st.Begin(ctx, k, "bob", time.Minute)
	fmt.Println(alice.Status, bob.Status, "held by", bob.Record.By)

	// ... alice republishes the entry and waits for the broker's confirm ...
	if _, err := st.Finish(ctx, k, alice.Token, resolution.Replayed); err != nil {
		panic(err)
	}
	all, _ := st.Resolutions(ctx, "orders.dlq")
	fmt.Println(all["a8a8601d"].Outcome, "by", all["a8a8601d"].By)
	other, _ := st.Resolutions(ctx, "payments.dlq")
	fmt.Println(len(other), "in another DLQ")
	// Output:
	// acquired in_progress held by alice
	// replayed by alice
	// 0 in another DLQ
}
