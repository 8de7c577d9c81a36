package backend

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup/sqlstore"

	"github.com/idempo/idempo/dlq/resolution"
	resredis "github.com/idempo/idempo/dlq/resolution/redisstore"
	ressql "github.com/idempo/idempo/dlq/resolution/sqlstore"
)

// Resolutions is an opened resolution store: where `idempo dlq` keeps what
// operators decided.
type Resolutions struct {
	Store resolution.Store
	// DB and Dialect are the SQL database the store keeps its table in
	// (nil for Redis): where the dead-letter console keeps its index.
	DB      *sql.DB
	Dialect sqlstore.Dialect
	// Redis is the store's client on Redis (nil elsewhere): where the
	// dead-letter console keeps its index then.
	Redis *redis.Client
	close func() error
}

// Close closes the store's connections.
func (r *Resolutions) Close() error { return r.close() }

// OpenResolutions opens the resolution store at the server a spec names:
// dlq/resolution/redisstore under the prefix "idempo:" (keys
// "idempo:dlq:{TOPIC}"), or dlq/resolution/sqlstore's default table
// idempo_dlq_resolutions, created if missing. Memory is refused: its records
// would vanish with the command.
func OpenResolutions(ctx context.Context, spec Spec) (*Resolutions, error) {
	switch spec.Kind {
	case Redis:
		client, err := openRedisClient(ctx, spec)
		if err != nil {
			return nil, err
		}
		st, err := resredis.New(client, &resredis.Options{Prefix: "idempo:"})
		if err != nil {
			_ = client.Close()
			return nil, err
		}
		return &Resolutions{Store: st, Redis: client, close: client.Close}, nil
	case Postgres, MySQL, SQLite:
		o, err := openSQLDB(ctx, spec, "dlq")
		if err != nil {
			return nil, err
		}
		st, err := ressql.New(o.db, &ressql.Options{Dialect: o.dialect})
		if err == nil {
			err = st.Migrate(ctx)
		}
		if err != nil {
			_ = o.db.Close()
			return nil, err
		}
		return &Resolutions{Store: st, DB: o.db, Dialect: o.dialect, close: o.db.Close}, nil
	default:
		return nil, fmt.Errorf("store %s cannot keep resolution records; give redis://, postgres://, mysql:// or sqlite://PATH", spec)
	}
}
