package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	dedupsql "github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/resolutiontest"
	"github.com/idempo/idempo/dlq/resolution/sqlstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dsn(t testing.TB, d dedupsql.Dialect, dir string) string {
	switch d {
	case dedupsql.Postgres:
		if v := os.Getenv("IDEMPO_TEST_POSTGRES_DSN"); v != "" {
			return v
		}
		return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	case dedupsql.MySQL:
		if v := os.Getenv("IDEMPO_TEST_MYSQL_DSN"); v != "" {
			return v
		}
		return "root@tcp(127.0.0.1:3306)/test?parseTime=true"
	}
	return filepath.Join(dir, "resolutions.db")
}

func openDB(t testing.TB, d dedupsql.Dialect, dsn string) *sql.DB {
	t.Helper()
	var (
		db  *sql.DB
		err error
	)
	switch d {
	case dedupsql.Postgres:
		db, err = sql.Open("pgx", dsn)
	case dedupsql.MySQL:
		db, err = sql.Open("mysql", dsn)
	default:
		db, err = dedupsql.OpenSQLite(dsn)
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, db.PingContext(ctx), "%s is required", d)
	return db
}

func TestConformance(t *testing.T) {
	for _, d := range []dedupsql.Dialect{dedupsql.Postgres, dedupsql.MySQL, dedupsql.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			var b [5]byte
			_, _ = rand.Read(b[:])
			table := "idempo_restest_" + hex.EncodeToString(b[:])
			source := dsn(t, d, t.TempDir())
			db := openDB(t, d, source)
			st, err := sqlstore.New(db, &sqlstore.Options{Table: table})
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, st.Migrate(ctx))
			require.NoError(t, st.Migrate(ctx), "Migrate is idempotent")
			t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+table) })
			resolutiontest.Run(t, func(*testing.T) resolution.Store { return st }, resolutiontest.Features{
				Granularity: time.Microsecond,
				Parallel:    d != dedupsql.SQLite,
				Reopen: func(t *testing.T, _ resolution.Store) resolution.Store {
					other, err := sqlstore.New(openDB(t, d, source), &sqlstore.Options{Dialect: d, Table: table})
					require.NoError(t, err)
					return other
				},
			})
		})
	}
}

func TestOptions(t *testing.T) {
	_, err := sqlstore.New(nil, nil)
	require.ErrorContains(t, err, "nil *sql.DB")
	db := openDB(t, dedupsql.SQLite, filepath.Join(t.TempDir(), "x.db"))
	_, err = sqlstore.New(db, &sqlstore.Options{Table: "bad name"})
	require.ErrorContains(t, err, "invalid table name")
	_, err = sqlstore.New(db, &sqlstore.Options{Dialect: "oracle"})
	require.ErrorContains(t, err, "oracle")
	_, err = sqlstore.New(db, nil)
	require.NoError(t, err, "the dialect is detected from the driver")
}
