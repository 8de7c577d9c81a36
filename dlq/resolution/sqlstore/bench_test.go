package sqlstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	dedupsql "github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq/resolution/sqlstore"
)

// BenchmarkResolutions100k reads the resolutions of a DLQ with 100,000
// resolved entries (what a console listing such a DLQ reads), beside
// 100,000 of another DLQ, written directly in the store's format.
func BenchmarkResolutions100k(b *testing.B) {
	const n = 100_000
	for _, d := range []dedupsql.Dialect{dedupsql.Postgres, dedupsql.MySQL, dedupsql.SQLite} {
		b.Run(string(d), func(b *testing.B) {
			var r [5]byte
			_, _ = rand.Read(r[:])
			table := "idempo_resbench_" + hex.EncodeToString(r[:])
			db := openDB(b, d, dsn(b, d, b.TempDir()))
			ctx := context.Background()
			st, err := sqlstore.New(db, &sqlstore.Options{Dialect: d, Table: table})
			require.NoError(b, err)
			require.NoError(b, st.Migrate(ctx))
			defer db.ExecContext(ctx, "DROP TABLE "+table) //nolint:errcheck // best effort
			for _, dlq := range []string{"orders.dlq", "payments.dlq"} {
				for lo := 0; lo < n; lo += 1000 {
					var sb strings.Builder
					sb.WriteString("INSERT INTO " + table + " (dlq, entry_id, state, token, by_whom, at_us, lease_until_us, outcome) VALUES ")
					for i := lo; i < lo+1000; i++ {
						if i > lo {
							sb.WriteString(",")
						}
						fmt.Fprintf(&sb, "('%s', 'entry-%06d', 2, '0123456789abcdef0123456789abcdef', 'alice@ops-1', 1764000000000000, 0, 'replayed')", dlq, i)
					}
					_, err := db.ExecContext(ctx, sb.String())
					require.NoError(b, err)
				}
			}
			b.ResetTimer()
			for range b.N {
				got, err := st.Resolutions(ctx, "orders.dlq")
				require.NoError(b, err)
				require.Len(b, got, n)
			}
		})
	}
}
