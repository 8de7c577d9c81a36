package backend

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseCommandCPU(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=10,usec=120,usec_per_call=12.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_ping:calls=1,usec=3,usec_per_call=3.00\r\n" +
		"cmdstat_info:calls=2,usec=40,usec_per_call=20.00\r\n" +
		"not_a_stat:usec=1000\r\n"
	require.Equal(t, 163*time.Microsecond, parseCommandCPU(info))
	require.Zero(t, parseCommandCPU(""))
	require.Zero(t, parseCommandCPU("cmdstat_x:calls=1,usec=oops"))
}

func FuzzParseCommandCPU(f *testing.F) {
	f.Add("cmdstat_evalsha:calls=10,usec=120,usec_per_call=12.00\r\n")
	f.Add("cmdstat_:usec=-5")
	f.Add(strings.Repeat("cmdstat_a:usec=9223372036854775807\n", 3))
	f.Fuzz(func(t *testing.T, info string) {
		_ = parseCommandCPU(info) // never panics
	})
}

// A server that answers with an error is not reported as unreachable: the
// operator fixes the URL, not the network. A closed port is unreachable.
func TestReachSaysWhetherTheServerAnswered(t *testing.T) {
	ctx := context.Background()
	for url, want := range map[string]string{
		"redis://127.0.0.1:6379/99":                   "answered with an error",
		"postgres://no_such_role@127.0.0.1:5432/test": "answered with an error",
		"mysql://root@127.0.0.1:3306/no_such_db":      "answered with an error",
		"redis://127.0.0.1:1/0":                       "is unreachable",
		"postgres://postgres@127.0.0.1:1/test":        "is unreachable",
	} {
		spec, err := ParseStore(url)
		require.NoError(t, err, url)
		st, err := OpenStore(ctx, spec, "reach")
		if err == nil {
			_ = st.Close()
		}
		require.ErrorContains(t, err, want, url)
	}
}
