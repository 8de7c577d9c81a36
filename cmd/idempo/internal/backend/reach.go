package backend

import (
	"errors"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

// reach says why a first call to a server failed: "answered with an error"
// when the server replied (bad credentials, an unknown database or role, a
// DB index out of range: fix the URL), "is unreachable" otherwise (down,
// wrong host or port, a firewall: start it or fix the address).
func reach(err error) string {
	var (
		rerr redis.Error
		perr *pgconn.PgError
		merr *mysql.MySQLError
	)
	if errors.As(err, &rerr) || errors.As(err, &perr) || errors.As(err, &merr) {
		return "answered with an error"
	}
	return "is unreachable"
}
