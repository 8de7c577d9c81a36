package backend

import (
	"io"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// redacted replaces a secret wherever the CLI shows a URL or DSN.
const redacted = "xxxxx"

// MinSearchedSecret is the length from which a [Redactor] searches free
// text for a secret. Shorter secrets are still replaced wherever the CLI
// prints a URL or DSN itself ([Redact]), but replacing every "pw" in every
// message would garble the output.
const MinSearchedSecret = 4

// secretKeys are the parameter names that carry a password, in a URL's
// query (postgres://h/db?password=…) or a key=value DSN (host=h password=…).
var secretKeys = `password|passwd|pass|pwd|sslpassword|secret|token|access_token|auth`

// keyValueSecret matches a secret key of a key=value DSN (libpq's
// host=h password=…, quoted values too) at the start or after white space:
// the value runs to the next white space unless it is quoted.
var keyValueSecret = regexp.MustCompile(`(?i)(?:^|[\s=])(?:` + secretKeys + `)\s*=\s*('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|\S*)`)

// querySecret matches a secret parameter of a URL's query.
var querySecret = regexp.MustCompile(`(?i)[?&](?:` + secretKeys + `)=([^&#\s]*)`)

// mysqlDSN matches the Go MySQL driver's DSN, user:password@tcp(host)/db or
// user:password@/db; the password runs up to the last '@' before the
// protocol (the driver allows '@' in passwords).
var mysqlDSNSecret = regexp.MustCompile(`^[^:@/()\s]*:(.*)@(?:[a-zA-Z0-9]*\(|/)`)

type span struct{ start, end int }

// secretSpans returns where s holds credentials: URL userinfo passwords
// (scheme://user:PASSWORD@host), secret query parameters, key=value DSN
// secrets (quoted or not) and MySQL DSN passwords. s may hold several
// values (a comma-separated list, a whole command line).
func secretSpans(s string) []span {
	var out []span
	// URL userinfo: the authority runs from "://" to the first '/', '?' or
	// '#' (as net/url reads it); the userinfo is what precedes its last '@'.
	for off := 0; off < len(s); {
		i := strings.Index(s[off:], "://")
		if i < 0 {
			break
		}
		start := off + i + 3
		end := len(s)
		if j := strings.IndexAny(s[start:], "/?#"); j >= 0 {
			end = start + j
		}
		auth := s[start:end]
		if !strings.Contains(auth, "@") && end < len(s) && rawDelimiterInUser(auth, tokenScheme(s[:off+i])) {
			// A password (or NATS token) with a raw '/', '?' or '#': the
			// URL is invalid and its error shows it whole. Its user part
			// runs to the last '@' of this item.
			item := len(s)
			if j := strings.IndexAny(s[start:], " \t\n,'\""); j >= 0 {
				item = start + j
			}
			if at := strings.LastIndexByte(s[end:item], '@'); at >= 0 {
				end = end + at + 1
				auth = s[start:end]
			}
		}
		if at := strings.LastIndexByte(auth, '@'); at >= 0 {
			if c := strings.IndexByte(auth[:at], ':'); c >= 0 && c+1 < at {
				out = append(out, span{start + c + 1, start + at})
			} else if c < 0 && at > 0 && tokenScheme(s[:off+i]) {
				out = append(out, span{start, start + at}) // nats://TOKEN@host
			}
		}
		off = start
	}
	for _, re := range []*regexp.Regexp{keyValueSecret, querySecret} {
		for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
			if m[3] > m[2] {
				out = append(out, span{m[2], m[3]})
			}
		}
	}
	// A MySQL DSN: the whole of s, or any comma- or space-separated item,
	// without "://".
	if !strings.Contains(s, "://") {
		if m := mysqlDSNSecret.FindStringSubmatchIndex(s); m != nil && m[3] > m[2] {
			out = append(out, span{m[2], m[3]})
		}
	}
	for off := 0; off <= len(s); {
		end := off + strings.IndexAny(s[off:], ", \t\n")
		if end < off {
			end = len(s)
		}
		item := s[off:end]
		if !strings.Contains(item, "://") {
			if m := mysqlDSNSecret.FindStringSubmatchIndex(item); m != nil && m[3] > m[2] {
				out = append(out, span{off + m[2], off + m[3]})
			}
		}
		off = end + 1
	}
	return out
}

// rawDelimiterInUser reports whether auth, the text between "://" and the
// first '/', '?' or '#', cannot be a host: host:PORT with a port that is
// no number (user:pa/ss@host), or, for a NATS scheme (whose URLs have no
// path), anything at all (to/ken@host).
func rawDelimiterInUser(auth string, token bool) bool {
	c := strings.LastIndexByte(auth, ':')
	if c < 0 || strings.HasSuffix(auth, "]") {
		return token && auth != ""
	}
	port := auth[c+1:]
	return port == "" || strings.Trim(port, "0123456789") != ""
}

// tokenScheme reports whether the text before "://" ends in a scheme whose
// user part alone is a secret (NATS: nats://TOKEN@host, tls://TOKEN@host).
func tokenScheme(before string) bool {
	for _, sch := range []string{"nats", "tls"} {
		if strings.HasSuffix(before, sch) {
			rest := before[:len(before)-len(sch)]
			if rest == "" || !isSchemeChar(rest[len(rest)-1]) {
				return true
			}
		}
	}
	return false
}

func isSchemeChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}

// Redact returns s with every credential it holds replaced by "xxxxx":
// the password of a URL (amqp://u:xxxxx@h/), the token of a NATS URL
// (nats://xxxxx@h), secret query parameters
// (?password=xxxxx), the values of password keys in a key=value DSN
// (password=xxxxx, quoted or not) and the password of a MySQL DSN
// (u:xxxxx@tcp(h)/db). Everything else is kept, so the result still names
// the server. s may be a list or a whole command line.
func Redact(s string) string {
	spans := secretSpans(s)
	if len(spans) == 0 {
		return s
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	var b strings.Builder
	pos := 0
	for _, sp := range spans {
		if sp.end <= pos {
			continue // inside the span just replaced
		}
		if sp.start >= pos {
			b.WriteString(s[pos:sp.start])
			b.WriteString(redacted)
		} // else it overlaps the previous span: extend it
		pos = sp.end
	}
	b.WriteString(s[pos:])
	return b.String()
}

// Secrets returns the credentials s holds (see [Redact]), in each form a
// driver's error may show them: as written, percent-decoded, and without
// the quotes and escapes of a quoted DSN value.
func Secrets(s string) []string {
	var out []string
	add := func(v string) {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	for _, sp := range secretSpans(s) {
		v := s[sp.start:sp.end]
		add(v)
		if u, err := url.PathUnescape(v); err == nil {
			add(u)
		}
		if u, err := url.QueryUnescape(v); err == nil {
			add(u)
		}
		if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') {
			inner := strings.TrimSuffix(v[1:], v[:1])
			add(inner)
			add(strings.NewReplacer(`\\`, `\`, `\'`, `'`, `\"`, `"`).Replace(inner))
		}
	}
	return out
}

// Redactor removes known secrets from text: the one place where the CLI's
// output, error texts of drivers included, loses the credentials given on
// its command line. The zero value removes nothing. Safe for concurrent
// use once built.
type Redactor struct {
	secrets []string // longest first, at least MinSearchedSecret bytes
}

// NewRedactor collects the secrets of every value (see [Secrets]).
func NewRedactor(values ...string) *Redactor {
	r := &Redactor{}
	for _, v := range values {
		for _, s := range Secrets(v) {
			if len(s) >= MinSearchedSecret && !slices.Contains(r.secrets, s) {
				r.secrets = append(r.secrets, s)
			}
		}
	}
	// Longest first, so a secret that contains another goes whole.
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
	return r
}

// String returns s with every known secret replaced by "xxxxx". Other
// text is left alone: a URL in a help text keeps its example password.
func (r *Redactor) String(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, redacted)
	}
	return s
}

// Writer returns a writer that redacts each Write before passing it to w.
// A secret split across two Writes is not found: callers write whole
// lines or whole messages (fmt.Fprintf, json.Encoder and tabwriter cells do).
func (r *Redactor) Writer(w io.Writer) io.Writer { return redactWriter{r, w} }

type redactWriter struct {
	r *Redactor
	w io.Writer
}

// Unwrap returns the underlying writer (to tell whether it is a terminal).
func (rw redactWriter) Unwrap() io.Writer { return rw.w }

func (rw redactWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(rw.w, rw.r.String(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
