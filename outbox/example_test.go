package outbox_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

// An order and its event commit in one transaction; a relay then publishes
// the event. A rolled back transaction publishes nothing.
func Example() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlstore.OpenSQLite(filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ob, err := outbox.New(db, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}

	placeOrder := func(id string, commit bool) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, id); err != nil {
			log.Fatal(err)
		}
		event := message.NewMessage("evt-"+id, []byte(`{"order":"`+id+`"}`))
		event.Metadata.Set(outbox.KeyMetadata, id) // the ordering key
		if err := ob.Write(ctx, tx, "orders.placed", event); err != nil {
			log.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	placeOrder("o-1", true)
	placeOrder("o-2", false) // rolled back: no event
	placeOrder("o-3", true)

	broker := gochannel.NewGoChannel(gochannel.Config{Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer broker.Close()
	events, err := broker.Subscribe(ctx, "orders.placed")
	if err != nil {
		log.Fatal(err)
	}
	relay, err := outbox.NewRelay(ob, outbox.RelayConfig{Publisher: broker})
	if err != nil {
		log.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(relayCtx) }()
	for range 2 {
		m := <-events
		fmt.Println(m.UUID, string(m.Payload))
		m.Ack()
	}
	stopRelay()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	fmt.Println("published:", relay.Stats().Published)
	// Output:
	// evt-o-1 {"order":"o-1"}
	// evt-o-3 {"order":"o-3"}
	// published: 2
}

// Existing Watermill code publishes transactionally by swapping its
// publisher for one bound to the transaction.
func ExampleOutbox_Publisher() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlstore.OpenSQLite(filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	ob, err := outbox.New(db, &outbox.Options{Table: "events_outbox"})
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	notify := func(pub message.Publisher) error { // unchanged Watermill code
		return pub.Publish("invoices", message.NewMessage("inv-1", []byte("paid")))
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := notify(ob.Publisher(ctx, tx)); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	status, err := ob.Status(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range status {
		fmt.Printf("%s: %d pending, %d dead\n", s.Topic, s.Pending, s.Dead)
	}
	// Output:
	// invoices: 1 pending, 0 dead
}
