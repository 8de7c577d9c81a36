package console

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution/memstore"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// fakeSource is a DLQ in memory: one partition per topic, positions
// "0/OFFSET". It can be made unreachable.
type fakeSource struct {
	mu          sync.Mutex
	topics      map[string][]*message.Message
	unreachable bool
}

var errUnreachable = errors.New("dial tcp 10.9.9.9:9092: connect: connection refused (kafka://admin:hunter2@10.9.9.9:9092)")

func newFakeSource() *fakeSource { return &fakeSource{topics: map[string][]*message.Message{}} }

func (s *fakeSource) Read(ctx context.Context, topic string, fn func(dlqops.Entry) error) error {
	s.mu.Lock()
	msgs := append([]*message.Message(nil), s.topics[topic]...)
	down := s.unreachable
	s.mu.Unlock()
	if down {
		return errUnreachable
	}
	for i, m := range msgs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(dlqops.ParseEntry(topic, "0/"+strconv.Itoa(i), m.Copy())); err != nil {
			return err
		}
	}
	return nil
}

func (s *fakeSource) Count(_ context.Context, topic string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.topics[topic]), nil
}

func (s *fakeSource) add(topic string, m *message.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topics[topic] = append(s.topics[topic], m)
}

func (s *fakeSource) setUnreachable(b bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unreachable = b
}

// deadLetter adds an idempo dead-letter copy of event to topic.
func (s *fakeSource) deadLetter(topic, entryID, event, reason, handler, errText string, at time.Time, payload string) {
	m := message.NewMessage("uuid-"+entryID, []byte(payload))
	m.Metadata.Set(dlqmeta.KeyEntryID, entryID)
	m.Metadata.Set(dlqmeta.KeyOriginalTopic, "orders")
	m.Metadata.Set(dlqmeta.KeyOriginalUUID, event)
	m.Metadata.Set(dlqmeta.KeyEventID, event)
	m.Metadata.Set(dlqmeta.KeyHandler, handler)
	m.Metadata.Set(dlqmeta.KeyScope, handler)
	m.Metadata.Set(dlqmeta.KeyReason, reason)
	m.Metadata.Set(dlqmeta.KeyErrorClass, "permanent")
	m.Metadata.Set(dlqmeta.KeyError, errText)
	m.Metadata.Set(dlqmeta.KeyAttempts, "3")
	m.Metadata.Set(dlqmeta.KeyDeliveries, "1")
	m.Metadata.Set(dlqmeta.KeyDeadLetteredAt, at.UTC().Format(time.RFC3339Nano))
	s.add(topic, m)
}

// fakePublisher records what replays publish.
type fakePublisher struct {
	mu   sync.Mutex
	sent map[string][]*message.Message
	fail bool
}

func (p *fakePublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errors.New("publish refused")
	}
	if p.sent == nil {
		p.sent = map[string][]*message.Message{}
	}
	p.sent[topic] = append(p.sent[topic], msgs...)
	return nil
}

func (p *fakePublisher) Close() error { return nil }

func (p *fakePublisher) count(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sent[topic])
}

const (
	testDLQ  = "orders.dlq"
	testUser = "alice"
	testPass = "s3cret-pw"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

type bundle struct {
	h   *Handler
	src *fakeSource
	pub *fakePublisher
	res *memstore.Store
}

// setup returns a console with basic auth over a DLQ holding, in order:
// three "payment" failures (p1..p3, one group), two "stock" failures (s1,
// s2, another group) and one copy written by another tool (no idempo
// metadata). mutate adjusts the config before New.
func setup(t *testing.T, mutate func(*Config)) *bundle {
	t.Helper()
	b := &bundle{src: newFakeSource(), pub: &fakePublisher{}, res: memstore.New(nil)}
	for i, id := range []string{"p1", "p2", "p3"} {
		b.src.deadLetter(testDLQ, id, "evt-"+id, "permanent_error", "charge",
			`charge for order `+strconv.Itoa(1000+i)+` declined: card "4242-`+id+`"`, t0.Add(time.Duration(i)*time.Minute), `{"order":`+strconv.Itoa(1000+i)+`}`)
	}
	for i, id := range []string{"s1", "s2"} {
		b.src.deadLetter(testDLQ, id, "evt-"+id, "retries_exhausted", "reserve",
			"dial tcp 10.0.0."+strconv.Itoa(i+1)+":5432: connection refused", t0.Add(time.Hour+time.Duration(i)*time.Minute), "plain text payload")
	}
	foreign := message.NewMessage("foreign-1", []byte{0x00, 0xff, 0x10, 'x'})
	foreign.Metadata.Set(dlqmeta.KeyAttempts, "many")
	foreign.Metadata.Set(dlqmeta.KeyDeadLetteredAt, "yesterday")
	b.src.add(testDLQ, foreign)
	cfg := Config{
		DLQs: []string{testDLQ}, Source: b.src, Resolutions: b.res, Publisher: b.pub,
		Auth:   Auth{BasicUser: testUser, BasicPassword: testPass},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    func() time.Time { return t0.Add(2 * time.Hour) },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := New(cfg)
	require.NoError(t, err)
	b.h = h
	return b
}

func (b *bundle) refresh(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.h.Refresh(ctx))
}

type resp struct {
	status int
	body   string
	header http.Header
}

// do serves one request; auth adds the basic-auth credentials.
func (b *bundle) do(t *testing.T, method, target string, form url.Values, auth bool) resp {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, "http://localhost:8080"+target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if auth {
		r.SetBasicAuth(testUser, testPass)
	}
	w := httptest.NewRecorder()
	b.h.ServeHTTP(w, r)
	return resp{w.Code, w.Body.String(), w.Header()}
}

func (b *bundle) get(t *testing.T, target string) resp {
	t.Helper()
	return b.do(t, http.MethodGet, target, nil, true)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from the overview's forms.
func (b *bundle) csrf(t *testing.T) string {
	t.Helper()
	r := b.get(t, "/dlq/"+testDLQ)
	m := csrfRE.FindStringSubmatch(r.body)
	require.NotNil(t, m, "no CSRF token in the list page:\n%s", r.body)
	return m[1]
}

// post sends form with the CSRF token.
func (b *bundle) post(t *testing.T, target string, form url.Values) resp {
	t.Helper()
	form.Set("csrf", b.csrf(t))
	return b.do(t, http.MethodPost, target, form, true)
}

var pendingRE = regexp.MustCompile(`name="pending" value="([^"]+)"`)

// dryRun posts a confirm and returns the pending ID ("" if nothing to do).
func (b *bundle) dryRun(t *testing.T, form url.Values) (resp, string) {
	t.Helper()
	r := b.post(t, "/dlq/"+testDLQ+"/confirm", form)
	require.Equal(t, http.StatusOK, r.status, r.body)
	if m := pendingRE.FindStringSubmatch(r.body); m != nil {
		return r, m[1]
	}
	return r, ""
}
