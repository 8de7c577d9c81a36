package sqlstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	dedupsql "github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/sqlstore"
)

// Resolution records in a SQLite file (PostgreSQL and MySQL/MariaDB take
// their *sql.DB the same way).
func Example() {
	dir, _ := os.MkdirTemp("", "resolutions")
	defer os.RemoveAll(dir)
	db, err := dedupsql.OpenSQLite(filepath.Join(dir, "resolutions.db"))
	if err != nil {
		panic(err)
	}
	defer db.Close()
	st, err := sqlstore.New(db, nil) // the dialect is detected; table idempo_dlq_resolutions
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := st.Migrate(ctx); err != nil {
		panic(err)
	}
	k := resolution.Key{DLQ: "orders.dlq", EntryID: "a8a8601d"}
	b, _ := st.Begin(ctx, k, "alice@ops-1", time.Minute)
	rec, _ := st.Finish(ctx, k, b.Token, resolution.Purged)
	fmt.Println(rec.Status, rec.Outcome, rec.By)
	// Output:
	// resolved purged alice@ops-1
}
