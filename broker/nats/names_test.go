package nats

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTopicMapping(t *testing.T) {
	t.Parallel()
	for topic, stream := range map[string]string{
		"orders":                  "orders",
		"orders.dlq.handler":      "orders_2Edlq_2Ehandler",
		"orders.retry.300ms":      "orders_2Eretry_2E300ms",
		"a_b":                     "a_5Fb",
		"a-b":                     "a-b",
		"Grüße/ü:x":               "Gr_C3_BC_C3_9Fe_2F_C3_BC_3Ax",
		"orders.dlq.orders-h":     "orders_2Edlq_2Eorders-h",
		strings.Repeat("a", 200):  strings.Repeat("a", 200),
		"x." + "dlq.handler-name": "x_2Edlq_2Ehandler-name",
	} {
		subj, err := Subject(topic)
		require.NoError(t, err, topic)
		require.Equal(t, topic, subj)
		got, err := StreamName(topic)
		require.NoError(t, err, topic)
		require.Equal(t, stream, got, topic)
		require.True(t, validName(got), got)
	}
	for topic, why := range map[string]string{
		"":                             "empty",
		strings.Repeat("a", 201):       "longer than 200",
		"a" + strings.Repeat(".a", 90): "stream name, longer than 255",
		"$JS.API":                      "NATS reserves",
		"_INBOX.x":                     "NATS reserves",
		"orders.*":                     "wildcard",
		"orders.>":                     "wildcard",
		"a>b":                          "wildcard",
		".orders":                      "empty subject token",
		"orders.":                      "empty subject token",
		"a..b":                         "empty subject token",
		"with space":                   "white space",
		"tab\there":                    "white space",
		"bad\xffutf8":                  "invalid UTF-8",
	} {
		_, err := StreamName(topic)
		require.ErrorIs(t, err, ErrTopic, topic)
		require.Contains(t, err.Error(), why, topic)
	}
}

// FuzzStreamName: the mapping never panics, yields valid names, and is one
// to one.
func FuzzStreamName(f *testing.F) {
	for _, s := range [][2]string{{"orders.dlq.h", "orders_2Edlq_2Eh"}, {"a_b", "a.b"}, {"a_2Eb", "a.b"}, {"x", "y"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na, erra := StreamName(a)
		nb, errb := StreamName(b)
		if erra == nil && !validName(na) {
			t.Fatalf("StreamName(%q) = %q is not a valid name", a, na)
		}
		if erra == nil && errb == nil && a != b && na == nb {
			t.Fatalf("StreamName(%q) = StreamName(%q) = %q", a, b, na)
		}
	})
}
