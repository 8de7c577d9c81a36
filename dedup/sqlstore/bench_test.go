package sqlstore_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
)

func benchReq() dedup.ClaimRequest {
	return dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Minute, Retention: time.Hour}
}

// BenchmarkClaimComplete measures one event's dedup round on one connection:
// Claim of a new key, then Complete.
func BenchmarkClaimComplete(b *testing.B) {
	for _, d := range dialects {
		b.Run(string(d), func(b *testing.B) {
			st, _ := newStore(b, d)
			ctx := context.Background()
			scope := randomName("bench-")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := dedup.Key{Scope: scope, ID: fmt.Sprint(i)}
				i++
				req := benchReq()
				if _, err := st.Claim(ctx, k, req); err != nil {
					b.Fatal(err)
				}
				if err := st.Complete(ctx, k, req.Token, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClaimDuplicate measures a Claim that meets a done record.
func BenchmarkClaimDuplicate(b *testing.B) {
	for _, d := range dialects {
		b.Run(string(d), func(b *testing.B) {
			st, _ := newStore(b, d)
			ctx := context.Background()
			k := dedup.Key{Scope: randomName("bench-"), ID: "dup"}
			req := benchReq()
			_, err := st.Claim(ctx, k, req)
			require.NoError(b, err)
			require.NoError(b, st.Complete(ctx, k, req.Token, time.Hour))
			b.ReportAllocs()
			for b.Loop() {
				if res, err := st.Claim(ctx, k, benchReq()); err != nil || res.Status != dedup.StatusDone {
					b.Fatal(res.Status, err)
				}
			}
		})
	}
}

// BenchmarkInbox measures one event through the transactional inbox: Claim,
// then CompleteInTx with one business INSERT. Compare with BenchmarkPlainTx.
func BenchmarkInbox(b *testing.B) {
	for _, d := range dialects {
		b.Run(string(d), func(b *testing.B) {
			st, _ := newStore(b, d)
			insert := insertEffect(d, createEffects(b, st.DB(), d))
			ctx := context.Background()
			scope := randomName("bench-")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				id := fmt.Sprint(i)
				i++
				k := dedup.Key{Scope: scope, ID: id}
				req := benchReq()
				if _, err := st.Claim(ctx, k, req); err != nil {
					b.Fatal(err)
				}
				err := st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
					tx, _ := sqlstore.TxFromContext(ctx)
					_, err := tx.ExecContext(ctx, insert, id, 0)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPlainTx is the baseline of BenchmarkInbox: the same business
// INSERT in its own transaction, without dedup.
func BenchmarkPlainTx(b *testing.B) {
	for _, d := range dialects {
		b.Run(string(d), func(b *testing.B) {
			db, _ := openDB(b, d)
			insert := insertEffect(d, createEffects(b, db, d))
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				id := fmt.Sprint(i)
				i++
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, insert, id, 0); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSizing measures the table's bytes per done record (36-byte IDs, a
// 32-byte fingerprint) for docs/stores-sql.md. It runs only when
// IDEMPO_SQLSTORE_SIZING is set.
func TestSizing(t *testing.T) {
	if os.Getenv("IDEMPO_SQLSTORE_SIZING") == "" {
		t.Skip("set IDEMPO_SQLSTORE_SIZING=1 to measure bytes per record")
	}
	const rows = 20000
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			st, dsn := newStore(t, d)
			db := st.DB()
			ctx := context.Background()
			size := func() int64 {
				var n int64
				switch d {
				case sqlstore.Postgres:
					require.NoError(t, db.QueryRowContext(ctx, "SELECT pg_total_relation_size($1)", quote(d, st.Table())).Scan(&n))
				case sqlstore.MySQL:
					_, err := db.ExecContext(ctx, "ANALYZE TABLE "+quote(d, st.Table()))
					require.NoError(t, err)
					require.NoError(t, db.QueryRowContext(ctx, "SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", st.Table()).Scan(&n))
				default:
					_, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
					require.NoError(t, err)
					fi, err := os.Stat(dsn)
					require.NoError(t, err)
					n = fi.Size()
				}
				return n
			}
			before := size()
			scope := "orders-consumer"
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := w; i < rows; i += 8 {
						k := dedup.Key{Scope: scope, ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)}
						req := benchReq()
						req.Fingerprint = make([]byte, 32)
						_, err := st.Claim(ctx, k, req)
						require.NoError(t, err)
						require.NoError(t, st.Complete(ctx, k, req.Token, time.Hour))
					}
				})
			}
			wg.Wait()
			after := size()
			t.Logf("%s: %d bytes per record (%d records, table and indexes)", d, (after-before)/rows, rows)
		})
	}
}
