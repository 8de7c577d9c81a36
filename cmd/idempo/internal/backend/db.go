package backend

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"

	"github.com/idempo/idempo/dedup/sqlstore"
)

// ParseDB parses a --db value: the SQL database of an outbox,
// "postgres://user@host:5432/db", "mysql://user:pass@host:3306/db" or
// "sqlite://PATH". Errors match [ErrURL] and name the flag.
func ParseDB(raw string) (Spec, error) {
	if raw == "" {
		return Spec{}, urlError("db", raw, "empty (want postgres://…, mysql://… or sqlite://PATH)")
	}
	u, err := parse("db", raw)
	if err != nil {
		return Spec{}, err
	}
	switch u.Scheme {
	case "postgres", "postgresql":
		if u.Host == "" {
			return Spec{}, urlError("db", raw, "no host (want postgres://user@host:5432/db)")
		}
		return Spec{Kind: Postgres, Raw: raw, URL: u}, nil
	case "mysql", "mariadb":
		if u.Host == "" {
			return Spec{}, urlError("db", raw, "no host (want mysql://user:pass@host:3306/db)")
		}
		if len(u.Path) < 2 {
			return Spec{}, urlError("db", raw, "no database name (want mysql://user:pass@host:3306/db)")
		}
		return Spec{Kind: MySQL, Raw: raw, URL: u}, nil
	case "sqlite":
		if u.Host+u.Path == "" {
			return Spec{}, urlError("db", raw, "no file path (want sqlite:///path/to/file.db)")
		}
		return Spec{Kind: SQLite, Raw: raw, URL: u}, nil
	default:
		return Spec{}, urlError("db", raw, "unknown scheme "+strconvQuote(u.Scheme)+" (want postgres://, mysql:// or sqlite://)")
	}
}

// DB is an opened SQL database.
type DB struct {
	DB      *sql.DB
	Dialect sqlstore.Dialect
	// Display names the database (password redacted; a SQLite file by its
	// absolute path).
	Display string
	// URL is how another process reaches the same database.
	URL string
}

// OpenDB opens and pings the database a spec names. A SQLite spec without
// a path ([Spec.Embedded]) gets a file of its own named from runID in the
// cache directory, which the caller removes. PostgreSQL and MySQL pools
// keep up to 32 connections; SQLite has one (its writes are serialised).
func OpenDB(ctx context.Context, spec Spec, runID string) (*DB, error) {
	o, err := openSQLDB(ctx, spec, runID)
	if err != nil {
		return nil, err
	}
	return &DB{DB: o.db, Dialect: o.dialect, Display: o.display, URL: o.childURL}, nil
}

// Connector returns a driver connector to the database a spec names, for a
// caller that opens it through sql.OpenDB, e.g. to wrap the driver. A
// SQLite spec uses path (its URL's path when path is ""), with the busy
// timeout and immediate write transactions of sqlstore.OpenSQLite.
func Connector(spec Spec, path string) (driver.Connector, error) {
	switch spec.Kind {
	case Postgres:
		return stdlib.GetDefaultDriver().(driver.DriverContext).OpenConnector(spec.Raw)
	case MySQL:
		dsn, err := mysqlDSN(spec.URL)
		if err != nil {
			return nil, err
		}
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, err
		}
		return mysql.NewConnector(cfg)
	case SQLite:
		if path == "" && spec.URL != nil {
			path = spec.URL.Host + spec.URL.Path
		}
		if path == "" {
			return nil, fmt.Errorf("%s: no file path", spec)
		}
		dsn := fmt.Sprintf("%s?_pragma=busy_timeout(%d)&_txlock=immediate", path, sqlstore.SQLiteBusyTimeout.Milliseconds())
		return dsnConnector{dsn: dsn, drv: &sqlite.Driver{}}, nil
	default:
		return nil, fmt.Errorf("%s is not a SQL database", spec)
	}
}

// dsnConnector is database/sql's own connector for drivers without
// driver.DriverContext.
type dsnConnector struct {
	dsn string
	drv driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }
