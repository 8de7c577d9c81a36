package backend

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/idempo/idempo/dedup/sqlstore"
)

// DefaultSQLitePath is where the embedded SQLite store of a run lives: a
// file of its own in the user's cache directory (or the temp dir when there
// is none), removed when the run drops its store. Runs never share a file:
// SQLite locks a whole file for writes, so concurrent runs would wait on
// each other.
func DefaultSQLitePath(runID string) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "idempo", "demo-"+runID+".db")
}

// SQLTable is the dedup table of a run: every run has its own.
func SQLTable(runID string) string { return "idempo_dedup_" + runID }

// sqlDB is an opened SQL database and how to name it.
type sqlDB struct {
	db       *sql.DB
	dialect  sqlstore.Dialect
	display  string
	childURL string
}

// openSQLDB opens and pings the database a spec names (a SQLite spec
// without a path gets the run's own file).
func openSQLDB(ctx context.Context, spec Spec, runID string) (*sqlDB, error) {
	var (
		db       *sql.DB
		err      error
		dialect  sqlstore.Dialect
		display  = spec.String()
		childURL = spec.Raw
	)
	switch spec.Kind {
	case Postgres:
		dialect = sqlstore.Postgres
		db, err = sql.Open("pgx", spec.Raw)
	case MySQL:
		dialect = sqlstore.MySQL
		var dsn string
		dsn, err = mysqlDSN(spec.URL)
		if err == nil {
			db, err = sql.Open("mysql", dsn)
		}
	case SQLite:
		dialect = sqlstore.SQLite
		path := DefaultSQLitePath(runID)
		if spec.URL != nil {
			path = spec.URL.Host + spec.URL.Path
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		abs, aerr := filepath.Abs(path)
		if aerr == nil {
			path = abs
		}
		display = "sqlite://" + path
		childURL = display
		db, err = sqlstore.OpenSQLite(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("the server %s: %w", reach(err), err)
	}
	if spec.Kind != SQLite {
		db.SetMaxOpenConns(32)
		db.SetMaxIdleConns(32)
	}
	return &sqlDB{db: db, dialect: dialect, display: display, childURL: childURL}, nil
}

func openSQL(ctx context.Context, spec Spec, runID string) (*Store, error) {
	o, err := openSQLDB(ctx, spec, runID)
	if err != nil {
		return nil, err
	}
	db, dialect, display, childURL := o.db, o.dialect, o.display, o.childURL
	table := SQLTable(runID)
	st, err := sqlstore.New(db, &sqlstore.Options{Dialect: dialect, Table: table})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	drop := func(ctx context.Context) error {
		_, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
		return err
	}
	if spec.Kind == SQLite && spec.Embedded {
		path := strings.TrimPrefix(display, "sqlite://")
		drop = func(context.Context) error {
			_ = db.Close()
			for _, suffix := range []string{"", "-wal", "-shm"} {
				_ = os.Remove(path + suffix)
			}
			return nil
		}
	}
	return &Store{
		Spec: spec, Display: display, URL: childURL, Store: st,
		Drop:    drop,
		closers: []func() error{db.Close},
	}, nil
}

// mysqlDSN turns mysql://user:pass@host:port/db?params into the driver's DSN.
// The query's user and password parameters set the credentials; the other
// parameters are the driver's (tls=, timeout=, …) or session variables.
func mysqlDSN(u *url.URL) (string, error) {
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = u.Host
	if !strings.Contains(cfg.Addr, ":") {
		cfg.Addr += ":3306"
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.DBName = strings.Trim(u.Path, "/")
	cfg.ParseTime = true
	q := u.Query()
	// user and password in the query string are credentials, as in
	// PostgreSQL URLs: the driver would send any other parameter as a
	// session variable (SET password = '…' changes the account's password
	// on MySQL 8).
	if v := q.Get("user"); v != "" {
		cfg.User = v
	}
	if v := q.Get("password"); v != "" {
		cfg.Passwd = v
	}
	q.Del("user")
	q.Del("password")
	for k, vs := range q {
		if len(vs) > 0 && k != "parseTime" {
			if cfg.Params == nil {
				cfg.Params = map[string]string{}
			}
			cfg.Params[k] = vs[0]
		}
	}
	return cfg.FormatDSN(), nil
}
