package kafka

import (
	"context"
	"fmt"
	"strings"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASL mechanisms for [SASL.Mechanism].
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASL authenticates every connection idempo makes to the cluster: the
// preset's publisher and subscriber and the DLQ tools (dlq/kafkadlq) alike.
// Set it once in [Config]; with [ParseURL], a URL's user info sets it.
type SASL struct {
	// Mechanism is [SASLPlain], [SASLScramSHA256] or [SASLScramSHA512]
	// (case does not matter). Defaults to PLAIN, which sends the password as
	// is: use it over TLS only.
	Mechanism string
	// User names the principal. Required.
	User string
	// Password is the principal's secret. It is never printed: errors and
	// String show the mechanism and user only.
	Password string
}

// String returns the mechanism and the user, never the password.
func (s SASL) String() string { return s.mechanism() + " as " + s.User }

func (s SASL) mechanism() string {
	if s.Mechanism == "" {
		return SASLPlain
	}
	return strings.ToUpper(s.Mechanism)
}

func (s SASL) validate() error {
	switch s.mechanism() {
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		return fmt.Errorf("%w: SASL.Mechanism %q is not %s, %s or %s", ErrInvalidConfig, s.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
	}
	if s.User == "" {
		return fmt.Errorf("%w: SASL.User is empty", ErrInvalidConfig)
	}
	return nil
}

// applySarama sets s on a sarama configuration.
func (s SASL) applySarama(sc *sarama.Config) {
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User, sc.Net.SASL.Password = s.User, s.Password
	switch s.mechanism() {
	case SASLPlain:
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case SASLScramSHA256:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient {
			return &scramClient{mech: scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()}
		}
	case SASLScramSHA512:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient {
			return &scramClient{mech: scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()}
		}
	}
}

// scramClient runs franz-go's SCRAM conversation for sarama, which brings no
// SCRAM implementation of its own. One client serves one conversation.
type scramClient struct {
	mech  sasl.Mechanism
	sess  sasl.Session
	first []byte // the client-first message, sent on the first Step
	done  bool
}

func (c *scramClient) Begin(_, _, _ string) error {
	sess, first, err := c.mech.Authenticate(context.Background(), "")
	if err != nil {
		return err
	}
	c.sess, c.first = sess, first
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) {
	if c.first != nil {
		first := c.first
		c.first = nil
		return string(first), nil
	}
	done, resp, err := c.sess.Challenge([]byte(challenge))
	c.done = done
	return string(resp), err
}

func (c *scramClient) Done() bool { return c.done }
