package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/console"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// The end-to-end browser tests: `idempo demo --keep` leaves its poison
// events in the DLQ, a consumer with the handler fixed starts on the same
// dedup store, and an operator replays the poison group from the console in
// a real headless Chromium. The consumer's ledger must then hold one effect
// per replayed event and none for any other, and the entries must show as
// replayed by the operator, on the entry page and in the resolution store.

// TestConsoleBrowserOnRabbitMQ runs the scenario on RabbitMQ with the
// dedup store, the resolution records and the console's index in Redis; it
// also checks that the console shows the demo's DLQ grouped
// by reason and refuses a state-changing request without its CSRF token.
func TestConsoleBrowserOnRabbitMQ(t *testing.T) {
	chromium := needChromium(t)
	dedupStore := "redis://127.0.0.1:6379/0"
	e := runKeptDemo(t, dlqTestAMQP, dedupStore)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := deleteAMQPQueues(ctx, e.topic, e.dlqTopic, e.dlqTopic+".parked"); err != nil {
			t.Logf("delete the demo's queues: %v", err)
		}
	})
	// The resolution records and the console's index in Redis too.
	t.Cleanup(func() { unlinkMatching(t, "idempo:*{"+e.dlqTopic+"}*", e.dlqTopic) })
	consoleBrowserScenario(t, chromium, e, "redis://127.0.0.1:6379/0", "--topic", e.dlqTopic)
}

// TestConsoleBrowserOnKafka runs the scenario on an embedded Kafka cluster
// (which outlives the demo, as a real one would) with SQLite stores, the
// console finding the DLQ by its suffix.
func TestConsoleBrowserOnKafka(t *testing.T) {
	chromium := needChromium(t)
	emb, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	t.Cleanup(emb.Close)
	e := runKeptDemo(t, emb.URL(), "sqlite://"+filepath.Join(t.TempDir(), "dedup.db"))
	consoleBrowserScenario(t, chromium, e, "sqlite://"+filepath.Join(t.TempDir(), "resolutions.db"), "--topic-suffix", ".dlq")
}

func needChromium(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (scripts/services.sh installs it): the browser tests need a real headless Chromium")
	}
	return p
}

// keptDemo is what `idempo demo --keep` left behind.
type keptDemo struct {
	broker, store   string
	runID           string
	topic, dlqTopic string
	poison          map[string]bool // the poison events' IDs
}

const browserDemoEvents = 200

// browserDemoFaults is the demo's fault mix of the browser tests: every
// kind of fault, poison often enough for a group of a handful.
var browserDemoFaults = demo.Faults{DupRate: 0.1, AckLossRate: 0.02, FailRate: 0.05, PoisonRate: 0.04, PanicRate: 0.01, Seed: 7}

// runKeptDemo runs `idempo demo --keep` with one consumer (one handler,
// so the poison events make one group) and returns what it left.
func runKeptDemo(t *testing.T, brokerURL, storeURL string) keptDemo {
	t.Helper()
	f := browserDemoFaults
	code, out, errOut := runCLI(t, "demo", "--keep", "--json", "--broker", brokerURL, "--store", storeURL,
		"--events", strconv.Itoa(browserDemoEvents), "--consumers", "1", "--timeout", "40s",
		"--seed", strconv.FormatUint(f.Seed, 10), "--dup-rate", fmt.Sprint(f.DupRate), "--ack-loss-rate", fmt.Sprint(f.AckLossRate),
		"--fail-rate", fmt.Sprint(f.FailRate), "--poison-rate", fmt.Sprint(f.PoisonRate), "--panic-rate", fmt.Sprint(f.PanicRate))
	var l demo.Ledger
	require.NoError(t, json.Unmarshal([]byte(out), &l), "the demo's ledger: %s %s", out, errOut)
	e := keptDemo{broker: brokerURL, store: storeURL, runID: l.RunID, topic: demo.Topic(l.RunID), dlqTopic: l.DLQTopic, poison: map[string]bool{}}
	if sspec, err := backend.ParseStore(storeURL); err == nil && sspec.Kind == backend.Redis {
		t.Cleanup(func() { dropDedup(t, storeURL, l.RunID) })
	}
	require.Equal(t, 0, code, "the demo: %s", errOut)
	plan, err := demo.NewPlan("ev-"+l.RunID, browserDemoEvents, f)
	require.NoError(t, err)
	for i, id := range plan.IDs {
		if plan.Faults[i]&demo.FaultPoison != 0 {
			e.poison[id] = true
		}
	}
	require.NotEmpty(t, e.poison)
	require.Equal(t, len(e.poison), l.DeadLettered, "the plan names the dead-lettered events")
	return e
}

// dropDedup removes the dedup records a kept demo run left in a shared store.
func dropDedup(t *testing.T, storeURL, runID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec, err := backend.ParseStore(storeURL)
	if err != nil {
		return
	}
	st, err := backend.OpenStore(ctx, spec, runID)
	if err != nil {
		t.Logf("open the dedup store to clean up: %v", err)
		return
	}
	defer func() { _ = st.Close() }()
	if st.Drop != nil {
		if err := st.Drop(ctx); err != nil {
			t.Logf("drop the demo's dedup records: %v", err)
		}
	}
}

func deleteAMQPQueues(ctx context.Context, queues ...string) error {
	spec, err := backend.ParseBroker(dlqTestAMQP)
	if err != nil {
		return err
	}
	b, err := backend.OpenBroker(ctx, spec, nil)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	return b.Delete(ctx, queues...)
}

// unlinkMatching deletes the keys of the shared Redis matching pattern,
// and the console's jobs on dlqTopic.
func unlinkMatching(t *testing.T, pattern, dlqTopic string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer func() { _ = client.Close() }()
	iter := client.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		_ = client.Unlink(ctx, iter.Val()).Err()
	}
	if err := iter.Err(); err != nil {
		t.Logf("delete the keys %s: %v", pattern, err)
	}
	jobs, err := client.HGetAll(ctx, console.DefaultRedisPrefix+"jobs").Result()
	if err != nil {
		t.Logf("read the console's jobs: %v", err)
	}
	for id, state := range jobs {
		var j struct{ DLQ string }
		if json.Unmarshal([]byte(state), &j) == nil && j.DLQ == dlqTopic {
			_ = client.HDel(ctx, console.DefaultRedisPrefix+"jobs", id).Err()
		}
	}
}

// fixedConsumer is the demo's consumer after the fix: the same dedup store
// and scope, a handler that succeeds, and a ledger of its effects.
type fixedConsumer struct {
	mu      sync.Mutex
	effects map[string]int
	stack   *middleware.Stack
}

func (c *fixedConsumer) ledger() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.effects))
	for k, v := range c.effects {
		out[k] = v
	}
	return out
}

// startFixedConsumer consumes the demo's topic (on Kafka as the demo's
// consumer group, from where it stopped) until the test ends.
func startFixedConsumer(t *testing.T, e keptDemo) *fixedConsumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bspec, err := backend.ParseBroker(e.broker)
	require.NoError(t, err)
	sspec, err := backend.ParseStore(e.store)
	require.NoError(t, err)
	broker, err := backend.OpenBroker(ctx, bspec, nil)
	require.NoError(t, err)
	store, err := backend.OpenStore(ctx, sspec, e.runID)
	require.NoError(t, err)
	c := &fixedConsumer{effects: map[string]int{}}
	c.stack, err = middleware.New(middleware.Config{
		Store: store.Store, DLQ: dlq.Config{Publisher: broker.DLQ()}, Scope: "demo-" + e.runID,
		Lease: 10 * time.Second, Retention: time.Hour,
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond, MaxAttempts: 4},
	})
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	sub, err := broker.NewSubscriber("idempo-demo-"+e.runID, 0)
	require.NoError(t, err)
	h := c.stack.Middleware(func(m *message.Message) ([]*message.Message, error) {
		c.mu.Lock()
		c.effects[m.UUID]++
		c.mu.Unlock()
		return nil, nil
	})
	router.AddConsumerHandler("fixed", e.topic, sub, func(m *message.Message) error { _, err := h(m); return err })
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-done:
		t.Fatalf("the fixed consumer's router: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the fixed consumer did not start within 30s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the fixed consumer did not stop within 30s")
		}
		_ = sub.Close()
		_ = c.stack.Close()
		_ = store.Close()
		_ = broker.Close()
	})
	return c
}

var eventCell = regexp.MustCompile(`<td>(ev-[^<]+)</td>`)

// consoleBrowserScenario serves `idempo console consoleArgs…` on e's DLQ
// and replays its poison group from Chromium, then checks the ledger and
// the records.
func consoleBrowserScenario(t *testing.T, chromium string, e keptDemo, resURL string, consoleArgs ...string) {
	const operator = "oncall-ana"
	n := len(e.poison)
	fixed := startFixedConsumer(t, e)
	s := serveConsole(t, append([]string{"--broker", e.broker, "--store", resURL, "--unauthenticated", "--operator", operator}, consoleArgs...)...)

	// The overview shows the DLQ's poison events as one group, by reason.
	want := fmt.Sprintf("%s</a>: %d unresolved", e.dlqTopic, n)
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body = s.do(http.MethodGet, "", nil, false)
		if strings.Contains(body, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the overview never showed %q:\n%s", want, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Contains(t, body, "<td>"+dlq.ReasonRetriesExhausted+"</td>", "grouped by reason")
	require.Equal(t, 1, strings.Count(body, `value="replay">Replay group…`), "the poison events make one group:\n%s", body)
	// Without its CSRF token, a state-changing request is refused, and
	// nothing is replayed.
	status, _ := s.do(http.MethodPost, "dlq/"+url.PathEscape(e.dlqTopic)+"/confirm", url.Values{"action": {"replay"}, "group": {"x"}}, false)
	require.Equal(t, http.StatusForbidden, status, "a POST without the CSRF token")

	// The event to search for: the first poison event the list shows.
	_, list := s.do(http.MethodGet, "dlq/"+url.PathEscape(e.dlqTopic), nil, false)
	m := eventCell.FindStringSubmatch(list)
	require.NotNil(t, m, "an event ID in the list:\n%s", list)
	evID := m[1]
	require.True(t, e.poison[evID], "%s is a poison event", evID)

	ctx := browser(t, chromium, 50*time.Second)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(s.base),
		chromedp.WaitVisible(chromedp.Search(fmt.Sprintf(`//h2[contains(., "%s: %d unresolved")]`, e.dlqTopic, n))),
	), "the overview in the browser")

	// Search the event ID from the DLQ's list, then open its entry.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.Search(fmt.Sprintf(`//h2/a[text()=%q]`, e.dlqTopic))),
		chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), evID),
		chromedp.Submit(chromedp.CSS("#q")),
		chromedp.WaitVisible(chromedp.Search(`//p[contains(., "Entries 1–1 of 1")]`)),
	), "the search")
	rows, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("tbody")))
	require.NoError(t, err)
	require.Contains(t, rows, evID)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.Search(`//tbody//th/a`)),
		chromedp.WaitVisible(chromedp.Search(`//h1[starts-with(., "Entry ")]`)),
	), "the entry page")
	entryURL, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)

	// Replay the poison group: dry run, confirmation, the job's page until
	// it is done.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(s.base),
		chromedp.Click(chromedp.Search(`//button[text()="Replay group…"]`)),
		chromedp.WaitVisible(chromedp.Search(fmt.Sprintf(`//li[text()="%d to replay"]`, n))),
		chromedp.Click(chromedp.Search(`//button[text()="Confirm the replay"]`)),
		chromedp.WaitVisible(chromedp.Search(fmt.Sprintf(`//p[contains(., "Done: %d replayed, 0 parked")]`, n))),
	), "the group replay")
	job, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	require.NoError(t, err)
	require.Contains(t, job, "by "+operator)

	// The fixed consumer's ledger: each replayed event once, nothing else.
	deadline = time.Now().Add(30 * time.Second)
	var got map[string]int
	for {
		got = fixed.ledger()
		if len(got) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fixed consumer handled %d of the %d replayed events within 30s: %v", len(got), n, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for id, effects := range got {
		require.True(t, e.poison[id], "%s had its effect in the demo already; the replay must not repeat it", id)
		require.Equal(t, 1, effects, "the effects of %s", id)
	}
	require.Len(t, got, n)

	// The entry shows as replayed by the operator, on its page...
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(entryURL),
		chromedp.WaitVisible(chromedp.Search(`//h1[starts-with(., "Entry ")]`)),
	))
	entry, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	require.NoError(t, err)
	require.Contains(t, entry, "replayed by "+operator)
	require.Contains(t, entry, evID)
	// ...and every one in the resolution store.
	sspec, err := backend.ParseStore(resURL)
	require.NoError(t, err)
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := backend.OpenResolutions(rctx, sspec)
	require.NoError(t, err)
	defer func() { _ = rs.Close() }()
	recs, err := rs.Store.Resolutions(rctx, e.dlqTopic)
	require.NoError(t, err)
	require.Len(t, recs, n)
	for id, r := range recs {
		require.Equal(t, resolution.Replayed, r.Outcome, id)
		require.Equal(t, operator, r.By, id)
	}
	require.Equal(t, 0, s.stop(), s.stderr.String())
}

// browser starts a headless Chromium for the rest of the test, its
// actions bounded by timeout.
func browser(t *testing.T, chromium string, timeout time.Duration) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelT()
		cancel()
		cancelAlloc()
	})
	return ctx
}
