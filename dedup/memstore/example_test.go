package memstore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
)

func ExampleNew() {
	st := memstore.New(&memstore.Options{MaxKeys: 100_000})
	ctx := context.Background()
	key := dedup.Key{Scope: "billing", ID: "order-1"}
	req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Second, Retention: time.Hour}

	res, _ := st.Claim(ctx, key, req)
	fmt.Println(res.Status, res.Deliveries)
	_ = st.Complete(ctx, key, req.Token, time.Hour)

	res, _ = st.Claim(ctx, key, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Second, Retention: time.Hour})
	fmt.Println(res.Status)
	// Output:
	// acquired 1
	// done
}
