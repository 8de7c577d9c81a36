package sqlstore

import "sync/atomic"

// SharingStats counts the statements that carried claims and completions
// since the store was created, and the rows they carried: RowsPer gives the
// mean batch size, which shows how much concurrent callers share round trips
// (see Options.DisableSharing). Only the first statement of each is counted:
// the INSERT that claims new keys (the read and the locked update of an
// existing key are not counted) and the UPDATE that completes
// (Store.Complete; not Store.CompleteInTx, whose update is part of the
// caller's transaction). A claim or completion that a shared statement
// could not settle and that is sent again on its own counts again, as a
// statement of one row.
type SharingStats struct {
	// ClaimStatements is the number of claim INSERTs sent; ClaimRows the
	// rows they carried (the padding rows of a shared statement excluded).
	ClaimStatements, ClaimRows int64
	// CompleteStatements is the number of completion UPDATEs sent;
	// CompleteRows the rows they carried.
	CompleteStatements, CompleteRows int64
}

// RowsPerClaim is ClaimRows / ClaimStatements: 1 without sharing, more
// when concurrent claims share statements; 0 before the first claim.
func (s SharingStats) RowsPerClaim() float64 { return rowsPer(s.ClaimRows, s.ClaimStatements) }

// RowsPerComplete is CompleteRows / CompleteStatements, as RowsPerClaim.
func (s SharingStats) RowsPerComplete() float64 {
	return rowsPer(s.CompleteRows, s.CompleteStatements)
}

func rowsPer(rows, stmts int64) float64 {
	if stmts == 0 {
		return 0
	}
	return float64(rows) / float64(stmts)
}

// SharingStats returns the counts of the claim and completion statements
// the store has sent so far. It is safe to call at any time, from any
// goroutine; the counts are read one by one, so a snapshot taken while
// calls run may be off by the statements under way.
func (s *Store) SharingStats() SharingStats {
	return SharingStats{
		ClaimStatements:    s.sharing.claimStmts.Load(),
		ClaimRows:          s.sharing.claimRows.Load(),
		CompleteStatements: s.sharing.completeStmts.Load(),
		CompleteRows:       s.sharing.completeRows.Load(),
	}
}

// sharingCounters are the counts behind SharingStats.
type sharingCounters struct {
	claimStmts, claimRows, completeStmts, completeRows atomic.Int64
}

func (c *sharingCounters) claim(rows int) {
	c.claimStmts.Add(1)
	c.claimRows.Add(int64(rows))
}

func (c *sharingCounters) complete(rows int) {
	c.completeStmts.Add(1)
	c.completeRows.Add(int64(rows))
}
