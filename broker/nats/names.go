package nats

import (
	"errors"
	"fmt"
	"strings"
)

// ErrTopic is matched by the error returned for a Watermill topic that has
// no NATS subject or stream name (see [Subject] and [StreamName]).
var ErrTopic = errors.New("nats: topic cannot be mapped to a JetStream subject and stream")

// MaxTopicLen is the longest topic the preset maps. Its stream name (up to
// three bytes per byte of the topic) must also fit in 255 bytes, a file
// name on the server.
const MaxTopicLen = 200

// maxStreamName bounds a stream name: JetStream keeps each stream in a
// directory named after it.
const maxStreamName = 255

// Subject returns the subject a topic is published to and consumed from:
// the topic itself. A topic's '.' separate subject tokens, so
// "orders.dlq.handler" is the three-token subject orders.dlq.handler and a
// stream of another tool capturing orders.> holds it too. A topic that is
// not a literal subject is refused with an error matching [ErrTopic]:
// empty, longer than [MaxTopicLen], with white space or control characters,
// an empty token (a leading, trailing or doubled '.'), a wildcard ('*' or
// '>'), or starting with '$' or "_INBOX." (reserved by NATS).
func Subject(topic string) (string, error) {
	switch {
	case topic == "":
		return "", fmt.Errorf("%w: the topic is empty", ErrTopic)
	case len(topic) > MaxTopicLen:
		return "", fmt.Errorf("%w: topic %q is %d bytes, longer than %d", ErrTopic, topic[:20]+"…", len(topic), MaxTopicLen)
	case strings.HasPrefix(topic, "$") || strings.HasPrefix(topic, "_INBOX."):
		return "", fmt.Errorf("%w: topic %q starts with a prefix NATS reserves ($…, _INBOX.)", ErrTopic, topic)
	case strings.ContainsAny(topic, "*>"):
		return "", fmt.Errorf("%w: topic %q contains a wildcard ('*' or '>')", ErrTopic, topic)
	case strings.HasPrefix(topic, ".") || strings.HasSuffix(topic, ".") || strings.Contains(topic, ".."):
		return "", fmt.Errorf("%w: topic %q has an empty subject token (a leading, trailing or doubled '.')", ErrTopic, topic)
	}
	for _, r := range topic {
		if r <= ' ' || r == 0x7f || r == 0xfffd {
			return "", fmt.Errorf("%w: topic %q contains white space, a control character or invalid UTF-8", ErrTopic, topic)
		}
	}
	return topic, nil
}

// StreamName returns the name of the stream the preset creates for a topic
// when no stream captures its subject yet. Stream names cannot contain '.'
// (nor '*', '>', '/', '\' or white space), so the topic is escaped: ASCII
// letters, digits and '-' are kept, every other byte becomes '_' and two
// upper-case hex digits ("orders.dlq.handler" → "orders_2Edlq_2Ehandler",
// "a_b" → "a_5Fb"). The mapping is one to one, so two topics never share a
// stream. Topics [Subject] refuses are refused here too.
func StreamName(topic string) (string, error) {
	if _, err := Subject(topic); err != nil {
		return "", err
	}
	var b strings.Builder
	for i := range len(topic) {
		c := topic[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "_%02X", c)
	}
	if b.Len() > maxStreamName {
		return "", fmt.Errorf("%w: topic %q escapes to a %d-byte stream name, longer than %d", ErrTopic, topic, b.Len(), maxStreamName)
	}
	return b.String(), nil
}

// validName reports whether s is a valid consumer or stream name of the
// restricted form the preset accepts.
func validName(s string) bool {
	if s == "" || len(s) > maxStreamName {
		return false
	}
	for i := range len(s) {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			return false
		}
	}
	return true
}
