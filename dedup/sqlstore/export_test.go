package sqlstore

// Statements returns the claim and completion statements st sent on their
// fast paths (a batch's statements count once).
func Statements(st *Store) int64 { return st.statements.Load() }

// BatchStats returns the batches of claims and completions st sent and the
// calls they held (zero with Options.DisableSharing).
func BatchStats(st *Store) (claimBatches, claims, completeBatches, completes int64) {
	if st.claims == nil {
		return 0, 0, 0, 0
	}
	claimBatches, claims = st.claims.stats()
	completeBatches, completes = st.completes.stats()
	return claimBatches, claims, completeBatches, completes
}
