package dlqops_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dlq/dlqops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// sliceDLQ is a publisher that appends to per-topic logs and a Source that
// reads them: the shape of an append-only DLQ. onPublish, if set, runs
// before each publish, outside the lock.
type sliceDLQ struct {
	mu        sync.Mutex
	logs      map[string][]*message.Message
	fail      bool
	onPublish func(topic string)
	// partitions, when > 0, spreads positions over that many partitions:
	// the i-th message is at "i%partitions/i/partitions".
	partitions int
}

func newSliceDLQ() *sliceDLQ { return &sliceDLQ{logs: map[string][]*message.Message{}} }

func (s *sliceDLQ) Publish(topic string, msgs ...*message.Message) error {
	if s.onPublish != nil {
		s.onPublish(topic)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("broker down")
	}
	s.logs[topic] = append(s.logs[topic], msgs...)
	return nil
}
func (s *sliceDLQ) Close() error { return nil }

func (s *sliceDLQ) Read(_ context.Context, topic string, fn func(dlqops.Entry) error) error {
	s.mu.Lock()
	msgs := append([]*message.Message(nil), s.logs[topic]...)
	s.mu.Unlock()
	for i, m := range msgs {
		pos := strconv.Itoa(i)
		if s.partitions > 0 {
			pos = strconv.Itoa(i%s.partitions) + "/" + strconv.Itoa(i/s.partitions)
		}
		if err := fn(dlqops.ParseEntry(topic, pos, m)); err != nil {
			return err
		}
	}
	return nil
}

func (s *sliceDLQ) take(topic string) []*message.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.logs[topic]
	delete(s.logs, topic)
	return m
}
