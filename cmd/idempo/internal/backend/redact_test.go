package backend

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

func TestRedactEveryCredentialForm(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:SECRET@127.0.0.1:1/x":               "postgres://u:xxxxx@127.0.0.1:1/x",
		"postgres://127.0.0.1:1/x?password=SECRET&user=u": "postgres://127.0.0.1:1/x?password=xxxxx&user=u",
		"postgres://h/x?user=u&sslpassword=SECRET":        "postgres://h/x?user=u&sslpassword=xxxxx",
		"host=127.0.0.1 password=SECRET user=u":           "host=127.0.0.1 password=xxxxx user=u",
		"host=h password = 'a b SECRET' user=u":           "host=h password = xxxxx user=u",
		`host=h password="a \" SECRET" user=u`:            "host=h password=xxxxx user=u",
		"root:SECRET@tcp(127.0.0.1:1)/db":                 "root:xxxxx@tcp(127.0.0.1:1)/db",
		"root:p@ss SECRET@/db":                            "root:xxxxx@/db",
		"redis://:SECRET@127.0.0.1:1/0":                   "redis://:xxxxx@127.0.0.1:1/0",
		"redis://user:SECRET@h:1/0":                       "redis://user:xxxxx@h:1/0",
		"amqp://u:SECRET@h:1/":                            "amqp://u:xxxxx@h:1/",
		"amqp://u:p%40SECRET@h:1/":                        "amqp://u:xxxxx@h:1/",
		"nats://u:SECRET@h:4222":                          "nats://u:xxxxx@h:4222",
		"nats://SECRET@h:4222":                            "nats://xxxxx@h:4222",
		"tls://SECRET@h:4443":                             "tls://xxxxx@h:4443",
		"--broker=nats://SECRET@h,nats://u:SECRET@h2":     "--broker=nats://xxxxx@h,nats://u:xxxxx@h2",
		"nats://h:4222?token=SECRET":                      "nats://h:4222?token=xxxxx",
		"https://user@h/":                                 "https://user@h/",
		"redis-stream://:SECRET@h:6379/0":                 "redis-stream://:xxxxx@h:6379/0",
		"rediss-stream://user:SECRET@h/1":                 "rediss-stream://user:xxxxx@h/1",
		"--stores=memory,redis://:SECRET@h/0":             "--stores=memory,redis://:xxxxx@h/0",
		"--store=password=SECRET":                         "--store=password=xxxxx",
		"postgres://u:SECRET@%zz/":                        "postgres://u:xxxxx@%zz/",
		"gochannel":                                       "gochannel",
		"kafka://a:1,b:2":                                 "kafka://a:1,b:2",
		"postgres://u@h/db?sslmode=disable":               "postgres://u@h/db?sslmode=disable",
		// A password or token with a raw '/', '?' or '#' (not
		// percent-encoded) makes the URL invalid; the error shows it.
		"nats://user:SE/CRET@127.0.0.1:1":          "nats://user:xxxxx@127.0.0.1:1",
		"nats://user:SE#CRET@127.0.0.1:1":          "nats://user:xxxxx@127.0.0.1:1",
		"nats://SE/CRET@127.0.0.1:1":               "nats://xxxxx@127.0.0.1:1",
		"redis-stream://:SE/CRET@127.0.0.1:6379/0": "redis-stream://:xxxxx@127.0.0.1:6379/0",
		"redis-stream://:SE#CRET@127.0.0.1:6379/0": "redis-stream://:xxxxx@127.0.0.1:6379/0",
		"amqp://u:SE?CRET@h:1/ --store=memory":     "amqp://u:xxxxx@h:1/ --store=memory",
		"postgres://h:5432/x@y":                    "postgres://h:5432/x@y",
	} {
		require.Equal(t, want, Redact(in), in)
		require.NotContains(t, Redact(in), "SECRET", in)
	}
	require.Contains(t, Secrets("amqp://u:p%40SECRET@h:1/"), "p@SECRET", "the decoded form too")
	require.Contains(t, Secrets(`password='a \'b SECRET'`), `a 'b SECRET`, "the unquoted form too")
}

func TestRedactorWriter(t *testing.T) {
	t.Parallel()
	r := NewRedactor("--store", "host=h password='a b SECRET1'", "amqp://guest:pw@h/")
	var buf bytes.Buffer
	w := r.Writer(&buf)
	n, err := fmt.Fprintf(w, "driver said: password a b SECRET1 is wrong; pw stays\n")
	require.NoError(t, err)
	require.Equal(t, len("driver said: password a b SECRET1 is wrong; pw stays\n"), n)
	require.Equal(t, "driver said: password xxxxx is wrong; pw stays\n", buf.String(), "secrets shorter than MinSearchedSecret are not searched for")
	var zero Redactor
	require.Equal(t, "x SECRET", zero.String("x SECRET"))
}

// FuzzRedact: Redact never panics and is idempotent, and a secret in any
// credential form is gone from Redact's result and from a Redactor's.
func FuzzRedact(f *testing.F) {
	for _, s := range [][2]string{{"SECRET", "127.0.0.1:1"}, {"p@ss w0rd", "h"}, {"a'b\"c", "[::1]:5432"}, {"%zz", "h/x?y"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, secret, host string) {
		for _, s := range []string{secret, host, secret + host} {
			once := Redact(s)
			if Redact(once) != once {
				t.Fatalf("Redact is not idempotent on %q: %q then %q", s, once, Redact(once))
			}
			_ = Secrets(s)
		}
		// A secret the forms can carry whole: no delimiters of any form.
		if len(secret) < MinSearchedSecret || strings.ContainsAny(secret, "'\"\\@/?#&:=,;()%") || strings.ContainsFunc(secret, unicode.IsSpace) ||
			strings.ContainsAny(host, "@/?#&") || strings.Contains(host, secret) || strings.Contains(redacted, secret) {
			return
		}
		esc := url.QueryEscape(secret)
		for _, form := range []struct{ dsn, secret string }{
			{"postgres://u:" + secret + "@" + host + "/x", secret},
			{"postgres://" + host + "/x?password=" + esc + "&user=u", secret},
			{"host=" + host + " password=" + secret + " user=u", secret},
			{"host=" + host + " password='a b " + secret + "' user=u", "a b " + secret},
			{"u:" + secret + "@tcp(" + host + ")/db", secret},
			{"redis://:" + secret + "@" + host + "/0", secret},
			{"redis://user:" + secret + "@" + host + "/0", secret},
			{"amqp://u:" + secret + "@" + host + "/", secret},
			{"nats://u:" + secret + "@" + host, secret},
			{"nats://" + secret + "@" + host, secret},
			{"redis-stream://:" + secret + "@" + host + "/0", secret},
			{"rediss-stream://user:" + secret + "@" + host + "/0", secret},
		} {
			if strings.Contains(Redact(form.dsn), secret) {
				t.Fatalf("Redact(%q) = %q shows the secret", form.dsn, Redact(form.dsn))
			}
			text := "error: cannot reach " + form.dsn + " with " + form.secret + "\n"
			if got := NewRedactor(form.dsn).String(text); strings.Contains(got, secret) {
				t.Fatalf("the redactor of %q left the secret in %q", form.dsn, got)
			}
		}
	})
}
