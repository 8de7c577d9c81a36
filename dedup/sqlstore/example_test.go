package sqlstore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// A handler's business write and the dedup completion commit in one
// transaction; a duplicate delivery of the same event is then recognised and
// not run again.
func ExampleStore_CompleteInTx() {
	dir, err := os.MkdirTemp("", "sqlstore-example")
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
	store, err := sqlstore.New(db, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)`); err != nil {
		log.Fatal(err)
	}

	handle := func(eventID string, total int) {
		key := dedup.Key{Scope: "orders-consumer", ID: eventID}
		req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Second, Retention: 24 * time.Hour}
		res, err := store.Claim(ctx, key, req)
		if err != nil {
			log.Fatal(err)
		}
		if res.Status != dedup.StatusAcquired {
			fmt.Printf("%s: %s, skipped\n", eventID, res.Status)
			return
		}
		err = store.CompleteInTx(ctx, key, req.Token, 24*time.Hour, func(ctx context.Context) error {
			tx, _ := sqlstore.TxFromContext(ctx)
			_, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES (?, ?)`, eventID, total)
			return err
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: stored\n", eventID)
	}

	handle("order-1", 42)
	handle("order-1", 42) // a redelivery
	handle("order-2", 7)

	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("orders:", n)
	// Output:
	// order-1: stored
	// order-1: done, skipped
	// order-2: stored
	// orders: 2
}
