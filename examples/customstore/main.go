// Command customstore shows a user's own dedup store: a plain map behind a
// mutex, implementing dedup.Store. Its test runs idempo's conformance suite
// (dedup/deduptest) against it — the proof that any store can plug in.
package main

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

func main() {
	store := NewMapStore()
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	stack, err := middleware.New(middleware.Config{Store: store, DLQ: dlq.Config{Publisher: pubsub}})
	if err != nil {
		log.Fatal(err)
	}
	defer stack.Close()
	fmt.Printf("stack ready on %T; records: %d\n", store, store.Len(context.Background()))
}
