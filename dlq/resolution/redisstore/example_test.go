package redisstore_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dlq/resolution/redisstore"
)

// Read every resolution of a DLQ in one round trip. (Needs Redis; not run
// as a test.)
func Example() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	st, err := redisstore.New(client, nil) // keys idempo:dlq:{TOPIC}
	if err != nil {
		panic(err)
	}
	all, err := st.Resolutions(context.Background(), "orders.dlq")
	if err != nil {
		panic(err)
	}
	for id, r := range all {
		fmt.Println(id, r.Status, r.Outcome, r.By, r.At)
	}
}
