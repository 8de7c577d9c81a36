package console

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestGroupKeyGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"payment declined", "payment declined"},
		{"order 42 not found", "order <n> not found"},
		{"order-42 not found", "order-<n> not found"},
		{"amount 12.50 exceeds limit 10", "amount <n> exceeds limit <n>"},
		{"event 3f2b8c1e-9d4a-4b7e-8f00-1a2b3c4d5e6f rejected", "event <uuid> rejected"},
		{"event 3F2B8C1E-9D4A-4B7E-8F00-1A2B3C4D5E6F rejected", "event <uuid> rejected"},
		{`customer "ACME Ltd" is blocked`, "customer <q> is blocked"},
		{"customer 'bob' is blocked; can't retry", "customer <q> is blocked; can't retry"},
		{"field `email` is required", "field <q> is required"},
		{"dial tcp 10.0.3.17:5432: connect: connection refused", "dial tcp <addr>: connect: connection refused"},
		{"no route to 10.1.2.3 from 192.168.0.254", "no route to <addr> from <addr>"},
		{"dial tcp [::1]:6379: i/o timeout", "dial tcp <addr>: i/o timeout"},
		{"dial tcp fe80::1:6379 refused", "dial tcp <addr> refused"},
		{"dial tcp redis-primary.internal:6379: no route", "dial tcp <addr>: no route"},
		{"GET https://api.example.com/v1/orders/42?x=1 returned 503", "GET <url> returned <n>"},
		{"post to https://user:secret@hooks.example.com/x failed", "post to <url> failed"},
		{"mail to jane.doe+x@example.co.uk bounced", "mail to <email> bounced"},
		{"checksum 0xDEADBEEF mismatch", "checksum <hex> mismatch"},
		{"commit 9fceb02d0ae598e95dc970b74767f19372d61af8 missing", "commit <hex> missing"},
		{"user usr_8f3k2j9x not allowed", "user <id> not allowed"},
		{"expired at 2026-11-26T03:04:05.123Z", "expired at <time>"},
		{"expired at 2026-11-26 03:04:05+01:00", "expired at <time>"},
		{"timeout after 03:04:05", "timeout after <time>"},
		{"std::string overflow", "std::string overflow"},
		{"utf8 and sha256 stay", "utf8 and sha256 stay"},
		{"  many\t\tspaces\n\nand lines  ", "many spaces and lines"},
		{"bad byte \xff here 7", "bad byte \uFFFD here <n>"},
		{"Bestellung 42 für 'Müller' fehlgeschlagen", "Bestellung <n> für <q> fehlgeschlagen"},
		{`unterminated "quote 42`, `unterminated "quote <n>`},
	} {
		got := groupKey(tc.in)
		require.Equal(t, tc.want, got, "groupKey(%q)", tc.in)
		require.Equal(t, got, groupKey(got), "a key is its own key: %q", got)
	}
}

// Texts that differ only in what varies share a key.
func TestGroupKeyGroups(t *testing.T) {
	t.Parallel()
	a := groupKey(`charge ch_1AbC2dEf3GhI4 for "alice" failed: card 4242 declined at 10.0.0.1:443`)
	b := groupKey(`charge ch_9ZyX8wVu7TsR6 for "bob" failed: card 1881 declined at 10.0.0.2:443`)
	require.Equal(t, a, b)
	require.NotEqual(t, a, groupKey(`refund ch_1AbC2dEf3GhI4 for "alice" failed`))
}

func TestGroupKeyCut(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 500)
	got := groupKey(long)
	require.LessOrEqual(t, len(got), maxGroupKeyLen)
	require.True(t, utf8.ValidString(got))
	require.True(t, strings.HasSuffix(got, "…"))
	require.Equal(t, got, groupKey(got))
}

func FuzzGroupKey(f *testing.F) {
	for _, s := range []string{
		"order 42 not found", `customer "ACME" blocked`, "dial tcp [::1]:6379", "0xdead 9fceb02d0ae5",
		"a'b'c", "\"\\\"\"", "::", "1.2.3.4.5", "x-1-2-y", strings.Repeat("9", 300), "\xff\xfe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := groupKey(s)
		if !utf8.ValidString(k) {
			t.Fatalf("groupKey(%q) = %q: not UTF-8", s, k)
		}
		if len(k) > maxGroupKeyLen {
			t.Fatalf("groupKey(%q) is %d bytes, more than %d", s, len(k), maxGroupKeyLen)
		}
		if k2 := groupKey(k); k2 != k {
			t.Fatalf("not idempotent: groupKey(%q) = %q, groupKey of that = %q", s, k, k2)
		}
		if k != groupKey(s) {
			t.Fatalf("not deterministic for %q", s)
		}
	})
}
