package bench

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
)

// The statement counter sees every statement a transaction sends, plain
// or prepared, and nothing else.
func TestStatementCounter(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "c.db")
	spec, err := backend.ParseDB("sqlite://" + path)
	require.NoError(t, err)
	conn, err := backend.Connector(spec, "")
	require.NoError(t, err)
	c := &stmtCounter{inner: conn}
	db := sql.OpenDB(c)
	defer func() { _ = db.Close() }()
	_, err = db.ExecContext(t.Context(), "CREATE TABLE t (a INTEGER)")
	require.NoError(t, err)
	require.Equal(t, []string{"CREATE TABLE t (a INTEGER)"}, c.take())

	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(t.Context(), "INSERT INTO t (a) VALUES (?), (?)", 1, 2)
	require.NoError(t, err)
	st, err := tx.PrepareContext(t.Context(), "INSERT INTO t (a) VALUES (?)")
	require.NoError(t, err)
	_, err = st.ExecContext(t.Context(), 3)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	var n int
	require.NoError(t, tx.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n))
	require.NoError(t, tx.Commit())
	require.Equal(t, 3, n)
	require.Equal(t, []string{"INSERT INTO t (a) VALUES (?), (?)", "INSERT INTO t (a) VALUES (?)", "SELECT count(*) FROM t"}, c.take())
}
