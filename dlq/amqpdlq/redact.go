package amqpdlq

import "net/url"

// redact replaces the password in an AMQP URL by "xxxxx".
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
