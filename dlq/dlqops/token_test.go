package dlqops_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution/memstore"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// A token that is not one a dry run printed is refused in plain words, an
// unknown version says which one is understood, and both are refused
// before anything is read.
func TestSnapshotTokenErrors(t *testing.T) {
	for token, want := range map[string]string{
		"s1.xyz": "not a snapshot token printed by a dry run",
		"hello":  "not a snapshot token printed by a dry run",
		"s1." + base64.RawURLEncoding.EncodeToString([]byte(`{"v":1}`)):                           "not a snapshot token printed by a dry run",
		"s1." + base64.RawURLEncoding.EncodeToString([]byte(`{"v":2,"k":"purge","t":"t","n":1}`)): "version 2 is not understood (this idempo understands version 1",
		"s2.eyJ2IjoyfQ": "version 2 is not understood (this idempo understands version 1",
	} {
		err := dlqops.CheckSnapshot(token)
		require.ErrorIs(t, err, dlqops.ErrSnapshot, token)
		require.ErrorContains(t, err, want, token)
		require.NotContains(t, err.Error(), "invalid character", token)
	}
	bus := newSliceDLQ()
	copyOf(t, bus, "t.dlq", "e0", nil)
	ops := newOps(t, bus, memstore.New(nil), bus)
	dry, err := ops.Purge(context.Background(), "t.dlq", dlqops.Filter{}, dlqops.PurgeOptions{DryRun: true})
	require.NoError(t, err)
	require.NoError(t, dlqops.CheckSnapshot(dry.Snapshot))
	res, err := ops.Purge(context.Background(), "t.dlq", dlqops.Filter{}, dlqops.PurgeOptions{Snapshot: "s1.xyz"})
	require.ErrorIs(t, err, dlqops.ErrSnapshot)
	require.ErrorContains(t, err, "not a snapshot token printed by a dry run")
	require.Equal(t, dlqops.Result{}, res)
}

// A dry run that counts nothing gives no token: it would act on nothing.
func TestNoSnapshotOfNothing(t *testing.T) {
	bus := newSliceDLQ()
	copyOf(t, bus, "t.dlq", "e0", map[string]string{dlqmeta.KeyOriginalTopic: "orders"})
	ops := newOps(t, bus, memstore.New(nil), bus)
	ctx := context.Background()
	dry, err := ops.Replay(ctx, "t.dlq", dlqops.Filter{IDs: []string{"nope"}}, dlqops.ReplayOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{DryRun: true}, dry, "nothing matched: no token")
	dry, err = ops.Replay(ctx, "t.dlq", dlqops.Filter{}, dlqops.ReplayOptions{DryRun: true})
	require.NoError(t, err)
	require.NotEmpty(t, dry.Snapshot)
}

// Without $USER the audit trail names the account the process runs as (or
// "unknown"), never an empty name before the host.
func TestDefaultOperatorWithoutUSER(t *testing.T) {
	t.Setenv("USER", "")
	bus := newSliceDLQ()
	copyOf(t, bus, "t.dlq", "e0", nil)
	ops, err := dlqops.New(dlqops.Config{Source: bus, Resolutions: memstore.New(nil), Publisher: bus})
	require.NoError(t, err)
	res, err := ops.Purge(context.Background(), "t.dlq", dlqops.Filter{}, dlqops.PurgeOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Purged)
	all := list(t, ops, "t.dlq", dlqops.Filter{All: true})
	require.Len(t, all, 1)
	by := all[0].ResolvedBy
	require.NotEmpty(t, by)
	require.False(t, strings.HasPrefix(by, "@"), "resolved_by %q names nobody", by)
}

// Whatever the token, CheckSnapshot answers with an ErrSnapshot in plain
// words, never a decoder's message.
func FuzzCheckSnapshot(f *testing.F) {
	f.Add("s1.xyz")
	f.Add("s2.eyJ2IjoyfQ")
	f.Add("s1." + base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"k":"purge","t":"t","n":1}`)))
	f.Fuzz(func(t *testing.T, token string) {
		if err := dlqops.CheckSnapshot(token); err != nil {
			require.ErrorIs(t, err, dlqops.ErrSnapshot)
			require.NotContains(t, err.Error(), "invalid character")
			require.NotContains(t, err.Error(), "illegal base64")
		}
	})
}
