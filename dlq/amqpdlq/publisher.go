package amqpdlq

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dlq/dlqops"
)

// ReplayPublisher is the publisher [dlqops.Ops] replays through on RabbitMQ:
// replays go to the consumers' queues through a publisher with the
// configuration the consumers use, while entries past the replay cap go to
// the parking topic, which is a stream queue like the DLQ so that it can be
// listed too. It is safe for concurrent use.
type ReplayPublisher struct {
	queues    *amqp.Publisher
	streams   *amqp.Publisher
	isParking func(topic string) bool
}

var _ message.Publisher = (*ReplayPublisher)(nil)

// NewReplayPublisher returns a [ReplayPublisher]. cfg must declare queues as
// the consumers do (the same QueueArguments). isParking tells parking
// topics apart; nil means topics ending in ".parked", the default of
// dlqops.ParkingTopic.
func NewReplayPublisher(cfg amqp.Config, logger *slog.Logger, isParking func(topic string) bool) (*ReplayPublisher, error) {
	if isParking == nil {
		isParking = func(t string) bool { return strings.HasSuffix(t, dlqops.ParkingTopic("")) }
	}
	queues, err := amqp.NewPublisher(cfg, logger)
	if err != nil {
		return nil, err
	}
	streams, err := NewDLQPublisher(cfg, logger)
	if err != nil {
		_ = queues.Close()
		return nil, err
	}
	return &ReplayPublisher{queues: queues, streams: streams, isParking: isParking}, nil
}

// Publish sends msgs to topic, returning once the broker confirmed each.
func (p *ReplayPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.isParking(topic) {
		return p.streams.Publish(topic, msgs...)
	}
	return p.queues.Publish(topic, msgs...)
}

// Close closes both underlying publishers.
func (p *ReplayPublisher) Close() error {
	return errors.Join(p.queues.Close(), p.streams.Close())
}
