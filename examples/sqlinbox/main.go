// Command sqlinbox shows the transactional inbox of idempo's SQL store on an
// embedded SQLite database in a temporary directory.
//
// A "payments" consumer receives a stream with duplicates and redeliveries.
// Each event is claimed, then its business write (a row in ledger) and the
// dedup completion are committed in one transaction. The handler fails the
// first time it sees one event; the claim is released and the redelivery
// succeeds. A claim whose owner "crashed" is taken over once its lease runs
// out, and the crashed owner's late completion is rolled back. At the end
// every event has exactly one ledger row.
//
//	go run ./examples/sqlinbox
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
)

const (
	scope     = "payments"
	lease     = 200 * time.Millisecond
	retention = 24 * time.Hour
)

var errTransient = errors.New("downstream timeout")

type consumer struct {
	store     *sqlstore.Store
	failedFor map[string]bool
}

// handle processes one delivery. It returns what happened, for the log.
func (c *consumer) handle(ctx context.Context, eventID string, amount int) (string, error) {
	key := dedup.Key{Scope: scope, ID: eventID}
	req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: lease, Retention: retention}
	res, err := c.store.Claim(ctx, key, req)
	if err != nil {
		return "", err
	}
	switch res.Status {
	case dedup.StatusDone:
		return "duplicate, acked without running the handler", nil
	case dedup.StatusInProgress:
		return fmt.Sprintf("in progress elsewhere for %v more, nacked", res.LeaseRemaining.Round(time.Millisecond)), nil
	case dedup.StatusDeadLettered:
		return "dead-lettered earlier, acked", nil
	}
	err = c.store.CompleteInTx(ctx, key, req.Token, retention, func(ctx context.Context) error {
		tx, ok := sqlstore.TxFromContext(ctx)
		if !ok {
			return errors.New("no inbox transaction")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger (event_id, amount) VALUES (?, ?)`, eventID, amount); err != nil {
			return err
		}
		if eventID == "pay-2" && !c.failedFor[eventID] {
			c.failedFor[eventID] = true
			return errTransient // the INSERT above is rolled back
		}
		return nil
	})
	switch {
	case err == nil:
		return fmt.Sprintf("processed (delivery %d)", res.Deliveries), nil
	case errors.Is(err, errTransient):
		if err := c.store.Release(ctx, key, req.Token, true); err != nil {
			return "", err
		}
		return "handler failed, claim released, nacked", nil
	default:
		return "", err
	}
}

func run() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "idempo-sqlinbox")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	db, err := sqlstore.OpenSQLite(filepath.Join(dir, "app.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := sqlstore.New(db, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE ledger (event_id TEXT NOT NULL, amount INTEGER NOT NULL)`); err != nil {
		return err
	}
	stopCleanup := store.StartCleanup(ctx)
	defer stopCleanup()

	c := &consumer{store: store, failedFor: map[string]bool{}}
	deliveries := []struct {
		id     string
		amount int
	}{
		{"pay-1", 100},
		{"pay-2", 250},
		{"pay-1", 100}, // publisher duplicate
		{"pay-2", 250}, // redelivery after the failure
		{"pay-3", 75},
		{"pay-3", 75}, // redelivery after a lost ack
	}
	for _, d := range deliveries {
		what, err := c.handle(ctx, d.id, d.amount)
		if err != nil {
			return fmt.Errorf("%s: %w", d.id, err)
		}
		fmt.Printf("%-6s %s\n", d.id, what)
	}

	// A worker claims pay-4 and stalls past its lease (say, a long GC pause);
	// another delivery takes the claim over and completes it.
	key := dedup.Key{Scope: scope, ID: "pay-4"}
	stalled := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: lease, Retention: retention}
	if _, err := store.Claim(ctx, key, stalled); err != nil {
		return err
	}
	what, err := c.handle(ctx, "pay-4", 30)
	if err != nil {
		return err
	}
	fmt.Printf("%-6s %s\n", "pay-4", what)
	time.Sleep(2 * lease)
	if what, err = c.handle(ctx, "pay-4", 30); err != nil {
		return err
	}
	fmt.Printf("%-6s %s\n", "pay-4", what)
	err = store.CompleteInTx(ctx, key, stalled.Token, retention, func(ctx context.Context) error {
		tx, _ := sqlstore.TxFromContext(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO ledger (event_id, amount) VALUES (?, ?)`, "pay-4", 30)
		return err
	})
	if !errors.Is(err, dedup.ErrLeaseLost) {
		return fmt.Errorf("the stalled worker's completion should lose its lease, got %w", err)
	}
	fmt.Printf("%-6s stalled worker woke up: %v; its write was rolled back\n", "pay-4", err)

	rows, err := db.QueryContext(ctx, `SELECT event_id, COUNT(*), SUM(amount) FROM ledger GROUP BY event_id ORDER BY event_id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	fmt.Println("ledger:")
	for rows.Next() {
		var id string
		var n, sum int
		if err := rows.Scan(&id, &n, &sum); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%s has %d ledger rows", id, n)
		}
		fmt.Printf("  %s amount %d (1 row)\n", id, sum)
	}
	return rows.Err()
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}
