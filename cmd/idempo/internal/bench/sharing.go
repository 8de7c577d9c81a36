package bench

import (
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// sharing is what a store's round trips carried: statements (SQL) or
// pipelines (Redis) and the rows or calls in them. The SQL store counts
// claims and completions apart; Redis has one kind.
type sharing struct {
	claimStmts, claimRows       int64
	completeStmts, completeRows int64
}

// sharingOf returns the store's counts so far (zero for a store that keeps
// none).
func sharingOf(st dedup.Store) sharing {
	switch s := st.(type) {
	case *sqlstore.Store:
		x := s.SharingStats()
		return sharing{x.ClaimStatements, x.ClaimRows, x.CompleteStatements, x.CompleteRows}
	case *redisstore.Store:
		x := s.SharingStats()
		return sharing{claimStmts: x.RoundTrips, claimRows: x.Calls}
	}
	return sharing{}
}

func (a sharing) sub(b sharing) sharing {
	return sharing{a.claimStmts - b.claimStmts, a.claimRows - b.claimRows, a.completeStmts - b.completeStmts, a.completeRows - b.completeRows}
}

func (a sharing) plus(b sharing) sharing {
	return sharing{a.claimStmts + b.claimStmts, a.claimRows + b.claimRows, a.completeStmts + b.completeStmts, a.completeRows + b.completeRows}
}

// setBatches sets v's mean batch sizes from what the store's round trips
// carried during its rounds: on SQL the rows per claim INSERT and per
// completion UPDATE, on Redis the script calls per round trip.
func (v *VariantResult) setBatches(s sharing, redis bool) {
	per := func(rows, stmts int64) float64 {
		if stmts == 0 {
			return 0
		}
		return round3(float64(rows) / float64(stmts))
	}
	if redis {
		v.CallsPerRoundTrip = per(s.claimRows, s.claimStmts)
		return
	}
	v.ClaimRowsPerStatement = per(s.claimRows, s.claimStmts)
	v.CompleteRowsPerStatement = per(s.completeRows, s.completeStmts)
}
