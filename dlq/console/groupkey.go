package console

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxGroupKeyLen is the longest group key, in bytes: longer normalised
// texts are cut (at a rune boundary) and end with "…".
const maxGroupKeyLen = 240

// The placeholders the group key puts where variable parts were.
const (
	phQuoted = "<q>"
	phUUID   = "<uuid>"
	phURL    = "<url>"
	phEmail  = "<email>"
	phAddr   = "<addr>"
	phTime   = "<time>"
	phHex    = "<hex>"
	phID     = "<id>"
	phNum    = "<n>"
)

var (
	reURL      = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s<>]+`)
	reEmail    = regexp.MustCompile(`[\w.+-]+@[\w-]+(?:\.[\w-]+)+`)
	reUUID     = regexp.MustCompile(`(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`)
	reDateTime = regexp.MustCompile(`\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?`)
	reClock    = regexp.MustCompile(`\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b`)
	reIPv6     = regexp.MustCompile(`(?i)\[[0-9a-f:.%\w]*:[0-9a-f:.%\w]*\](?::\d+)?|\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|(?:\b[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}\b)?(?::[0-9a-f]{1,4}\b)*`)
	reIPv4     = regexp.MustCompile(`\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b`)
	reHostPort = regexp.MustCompile(`\b[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*:\d{1,5}\b`)
	reHex0x    = regexp.MustCompile(`\b0[xX][0-9a-fA-F]+\b`)
	reDecimal  = regexp.MustCompile(`\b\d+\.\d+(?:[eE][+-]?\d+)?\b`)
	reToken    = regexp.MustCompile(`[\p{L}\p{N}_]+(?:-[\p{L}\p{N}_]+)*`)
	reSpace    = regexp.MustCompile(`\s+`)
)

// groupKey normalises an error text into the key its failures are grouped
// by: what varies from one failure to the next (quoted values, URLs, e-mail
// and network addresses, UUIDs, times, hexadecimal values, identifiers and
// numbers) is replaced by a placeholder, white space is collapsed, and the
// result is cut to 240 bytes. Invalid UTF-8 becomes U+FFFD. The same text
// always gives the same key, and a key is its own key.
func groupKey(text string) string {
	s := strings.ToValidUTF8(text, "\uFFFD")
	s = reSpace.ReplaceAllString(s, " ")
	s = reURL.ReplaceAllString(s, phURL)
	s = reEmail.ReplaceAllString(s, phEmail)
	s = reUUID.ReplaceAllString(s, phUUID)
	s = reDateTime.ReplaceAllString(s, phTime)
	s = reClock.ReplaceAllString(s, phTime)
	s = reIPv4.ReplaceAllString(s, phAddr)
	s = reIPv6.ReplaceAllStringFunc(s, func(m string) string {
		if m == "::" { // a scope operator (pkg::name), not an address
			return m
		}
		return phAddr
	})
	s = reHostPort.ReplaceAllString(s, phAddr)
	s = reHex0x.ReplaceAllString(s, phHex)
	s = reDecimal.ReplaceAllString(s, phNum)
	s = reToken.ReplaceAllStringFunc(s, normaliseToken)
	s = strings.TrimSpace(replaceQuoted(s))
	return cut(s, maxGroupKeyLen)
}

// normaliseToken replaces a word that is a number, a hexadecimal value or
// an identifier; in a dashed word (order-42) each such part.
func normaliseToken(tok string) string {
	if !strings.ContainsFunc(tok, isDigit) {
		return tok
	}
	parts := strings.Split(tok, "-")
	for i, p := range parts {
		switch {
		case !strings.ContainsFunc(p, isDigit):
		case strings.IndexFunc(p, func(r rune) bool { return !isDigit(r) }) < 0:
			parts[i] = phNum
		case len(p) >= 8 && isHex(p):
			parts[i] = phHex
		case len(p) >= 8 && strings.ContainsFunc(p, unicode.IsLetter):
			parts[i] = phID
		}
	}
	return strings.Join(parts, "-")
}

func isDigit(r rune) bool { return r >= '0' && r <= '9' || unicode.IsDigit(r) }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// replaceQuoted replaces each quoted value ("…", '…' or `…`, on one line)
// by a placeholder. A quote opens a value only at the start or after a
// character that is neither a letter nor a digit (so "can't" stays), and
// closes it only before one.
func replaceQuoted(s string) string {
	if !strings.ContainsAny(s, "\"'`") {
		return s
	}
	var b strings.Builder
	prev := rune(-1)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == '"' || r == '\'' || r == '`') && !isWordRune(prev) {
			if end := closingQuote(s, i+size, byte(r)); end >= 0 {
				b.WriteString(phQuoted)
				prev = '>'
				i = end + 1
				continue
			}
		}
		b.WriteRune(r)
		prev = r
		i += size
	}
	return b.String()
}

// closingQuote returns the index of the quote q that closes a value
// starting at from, or -1: none on the same line, followed by a word
// character. A backslash escapes the next byte.
func closingQuote(s string, from int, q byte) int {
	for j := from; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '\n':
			return -1
		case q:
			next, _ := utf8.DecodeRuneInString(s[j+1:])
			if j+1 < len(s) && isWordRune(next) {
				continue
			}
			return j
		}
	}
	return -1
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// cut shortens s to at most n bytes at a rune boundary, ending it with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
