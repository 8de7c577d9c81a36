package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
)

// The inbox gate skips extensions only while the inbox of the same key and
// token is open, waits for extensions already sent before it opens, keeps
// the longest skipped lease, and forgets idle keys.
func TestInboxGate(t *testing.T) {
	t.Parallel()
	var g inboxGate
	h := dedup.Key{Scope: "s", ID: "e"}.Hash()
	tok, other := dedup.Token("owner"), dedup.Token("other")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	require.False(t, g.beginExtend(h, tok, time.Second), "no inbox open: the extension runs")
	opened := make(chan *inboxEntry, 1)
	go func() {
		e, err := g.open(ctx, h, tok)
		if err != nil {
			t.Error(err)
		}
		opened <- e
	}()
	select {
	case <-opened:
		t.Fatal("the inbox opened while an extension sent before it was under way")
	case <-time.After(100 * time.Millisecond):
	}
	g.endExtend(h, tok)
	var e *inboxEntry
	select {
	case e = <-opened:
	case <-ctx.Done():
		t.Fatal("the inbox did not open once the extension returned")
	}

	require.True(t, g.beginExtend(h, tok, time.Second))
	require.True(t, g.beginExtend(h, tok, 3*time.Second))
	require.True(t, g.beginExtend(h, tok, 2*time.Second))
	require.False(t, g.beginExtend(h, other, time.Second), "another token's extension runs")
	g.endExtend(h, other)
	require.Equal(t, 3*time.Second, g.close(h, tok, e), "the longest skipped lease")
	require.False(t, g.beginExtend(h, tok, time.Second), "closed: extensions run again")
	g.endExtend(h, tok)
	require.Empty(t, g.keys, "idle keys are forgotten")
}
