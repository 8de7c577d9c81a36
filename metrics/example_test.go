package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/metrics"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Pass the metrics as the stack's Observer. Every outcome series of a
// (handler, topic) pair exists from its first message.
func ExampleNew() {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	if err != nil {
		panic(err)
	}
	dlqPub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer dlqPub.Close()
	stack, err := middleware.New(middleware.Config{
		Store:    memstore.New(nil),
		DLQ:      dlq.Config{Publisher: dlqPub},
		Observer: m,
		Logger:   quiet,
	})
	if err != nil {
		panic(err)
	}
	defer stack.Close()

	handler := stack.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		if string(msg.Payload) == "garbage" {
			return nil, retry.Permanent(errors.New("cannot parse order"))
		}
		return nil, nil
	})
	for _, d := range []struct{ id, payload string }{{"order-1", "42"}, {"order-1", "42"}, {"order-2", "garbage"}} {
		msg := message.NewMessage(d.id, []byte(d.payload))
		msg.SetContext(context.Background())
		_, _ = handler(msg)
	}

	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range families {
		if f.GetName() != "idempo_messages_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "outcome" {
					fmt.Println(l.GetValue(), s.GetCounter().GetValue())
				}
			}
		}
	}
	// Output:
	// dead_lettered 1
	// duplicate 1
	// failed 0
	// in_progress_nacked 0
	// processed 1
	// redelivered 0
}

// Serve exposes the registry at /metrics for processes without an HTTP
// server of their own.
func ExampleServe() {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	if err != nil {
		panic(err)
	}
	m.Register("billing", "orders")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, addr, err := metrics.Serve(ctx, "127.0.0.1:0", reg)
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+metrics.Path, nil)
	resp, err := client.Do(req)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "idempo_retries_total") {
			fmt.Println(line)
		}
	}
	fmt.Println(stop())
	// Output:
	// idempo_retries_total{handler="billing",topic="orders"} 0
	// <nil>
}
