package kafka

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/idempo/idempo/retry"
)

// The broker's MESSAGE_TOO_LARGE answer, as a single producer error, inside
// a batch's errors or wrapped, is permanent; other errors are not.
func TestTooLargeClassification(t *testing.T) {
	msg := &sarama.ProducerMessage{Topic: "orders"}
	brokerSide := &sarama.ProducerError{Msg: msg, Err: sarama.ErrMessageSizeTooLarge}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"broker", brokerSide, true},
		{"wrapped", fmt.Errorf("cannot produce message: %w", brokerSide), true},
		{"batch", sarama.ProducerErrors{{Msg: msg, Err: sarama.ErrNotLeaderForPartition}, brokerSide}, true},
		{"client", sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes: 2 > 1"), true},
		{"other configuration", sarama.ConfigurationError("Producer.Retry.Max must be >= 0"), false},
		{"leader", &sarama.ProducerError{Msg: msg, Err: sarama.ErrNotLeaderForPartition}, false},
		{"plain", errors.New("dial tcp: refused"), false},
	}
	for _, tc := range cases {
		got := permanentIfTooLarge(tc.err)
		if retry.IsPermanent(got) != tc.want {
			t.Errorf("%s: IsPermanent = %v, want %v (%v)", tc.name, !tc.want, tc.want, got)
		}
		if !strings.Contains(got.Error(), tc.err.Error()) {
			t.Errorf("%s: the original error is lost: %v", tc.name, got)
		}
	}
	if permanentIfTooLarge(nil) != nil {
		t.Error("nil must stay nil")
	}
}
