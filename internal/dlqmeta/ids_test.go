package dlqmeta_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/internal/dlqmeta"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEntryIDStableAndDistinct(t *testing.T) {
	require.Equal(t, dlqmeta.EntryID("s", "e", "u1", 0), dlqmeta.EntryID("s", "e", "u2", 0), "derived from the event ID, not the UUID")
	require.NotEqual(t, dlqmeta.EntryID("s", "e", "u", 0), dlqmeta.EntryID("s", "e", "u", 1), "a replay cycle gets a new entry")
	require.NotEqual(t, dlqmeta.EntryID("s", "", "u1", 0), dlqmeta.EntryID("s", "", "u2", 0))
}

func TestEntryIDWithoutIDs(t *testing.T) {
	require.Empty(t, dlqmeta.EntryID("s", "", "", 0), "neither ID: no derived entry ID")
	p := dlqmeta.PositionEntryID("s", "orders", "1", "7", 0)
	require.NotEmpty(t, p)
	require.Equal(t, p, dlqmeta.PositionEntryID("s", "orders", "1", "7", 0))
	for _, other := range []string{
		dlqmeta.PositionEntryID("s", "orders", "1", "8", 0),
		dlqmeta.PositionEntryID("s", "orders", "2", "7", 0),
		dlqmeta.PositionEntryID("s", "payments", "1", "7", 0),
		dlqmeta.PositionEntryID("t", "orders", "1", "7", 0),
		dlqmeta.PositionEntryID("s", "orders", "1", "7", 1),
	} {
		require.NotEqual(t, p, other)
	}
	for _, bad := range [][3]string{{"", "1", "7"}, {"orders", "", "7"}, {"orders", "x", "7"}, {"orders", "1", "-1"}} {
		require.Empty(t, dlqmeta.PositionEntryID("s", bad[0], bad[1], bad[2], 0), "%q", bad)
	}
}

func TestShortEventID(t *testing.T) {
	t.Parallel()
	short := strings.Repeat("é", dlqmeta.MaxEventIDMetadata/2)
	require.Equal(t, short, dlqmeta.ShortEventID(short), "IDs up to the limit are kept whole")
	long := strings.Repeat("é", 5000)
	got := dlqmeta.ShortEventID(long)
	require.LessOrEqual(t, len(got), dlqmeta.MaxEventIDMetadata)
	require.True(t, utf8.ValidString(got), "cut at a rune boundary")
	require.Contains(t, got, "(10000 bytes, sha256 ")
	require.NotEqual(t, got, dlqmeta.ShortEventID(long+"x"), "long IDs sharing a prefix stay apart")
}
