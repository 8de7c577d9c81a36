package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
)

// A message is claimed, its effect applied and the claim completed; a
// duplicate delivery of the same event then finds it done.
func Example() {
	// redis.NewUniversalClient, redis.NewFailoverClient and
	// redis.NewClusterClient work the same way.
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer client.Close()

	store, err := redisstore.New(client, &redisstore.Options{Prefix: "idempo-example:"})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	// A fresh event ID per run, so the example starts from a clean record.
	key := dedup.Key{Scope: "orders-consumer", ID: "order-" + string(dedup.NewToken())}
	req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Second, Retention: time.Minute}

	res, err := store.Claim(ctx, key, req)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("first delivery:", res.Status, "deliveries:", res.Deliveries)
	// ... apply the effect ...
	if err := store.Complete(ctx, key, req.Token, time.Minute); err != nil {
		fmt.Println(err)
		return
	}

	dup := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Second, Retention: time.Minute}
	res, err = store.Claim(ctx, key, dup)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("duplicate:", res.Status)

	// A stale owner cannot touch the record.
	err = store.Complete(ctx, key, dup.Token, time.Minute)
	fmt.Println("stale token:", errors.Is(err, dedup.ErrLeaseLost))
	// Output:
	// first delivery: acquired deliveries: 1
	// duplicate: done
	// stale token: true
}
