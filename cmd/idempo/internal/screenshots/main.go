// Command screenshots makes the pictures of docs/console.md (`make
// screenshots`): it runs the demo workload with --keep on an embedded Kafka
// cluster, adds a second DLQ of payment failures spread over the last week,
// serves the dead-letter console over both, and photographs its pages in
// headless Chromium (Debian's chromium, or the binary -chromium names):
// the overview, a group's list, a replay's confirmation, its job page and
// an entry it replayed.
//
// Usage:
//
//	go run ./cmd/idempo/internal/screenshots [-out docs/img] [-chromium PATH]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/chromedp/chromedp"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/console"
)

// maxPNG is the largest picture the docs take.
const maxPNG = 300 << 10

func main() {
	out := flag.String("out", "docs/img", "directory the PNGs are written to")
	chromium := flag.String("chromium", "chromium", "the Chromium binary")
	timeout := flag.Duration("timeout", 3*time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	err := run(ctx, *out, *chromium)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out, chromium string) error {
	bin, err := exec.LookPath(chromium)
	if err != nil {
		return fmt.Errorf("%s is not installed (scripts/services.sh installs it): %w", chromium, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "idempo-screenshots-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	emb, err := embedded.Start(embedded.Config{})
	if err != nil {
		return fmt.Errorf("start the embedded Kafka cluster: %w", err)
	}
	defer emb.Close()

	fmt.Fprintln(os.Stderr, "screenshots: running the demo workload (--keep)…")
	ledger, err := demo.Run(ctx, demo.Options{
		Events: 2000, Faults: demo.DefaultFaults, Consumers: 1, Broker: emb.URL(),
		Store: "sqlite://" + filepath.Join(tmp, "dedup.db"), Keep: true, Timeout: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("the demo: %w", err)
	}
	if err := ledger.Verdict(); err != nil {
		return fmt.Errorf("the demo: %w", err)
	}
	if err := seedPayments(ctx, emb.Config("")); err != nil {
		return fmt.Errorf("the payments DLQ: %w", err)
	}

	base, stop, err := serve(ctx, emb.URL(), "sqlite://"+filepath.Join(tmp, "resolutions.db"), []string{"payments.dlq", ledger.DLQTopic})
	if err != nil {
		return err
	}
	defer stop()
	return shoot(ctx, bin, base, ledger.DLQTopic, out)
}

// seedPayments dead-letters payment failures of three kinds, spread over
// the last week, more of them recently, into payments.dlq.
func seedPayments(ctx context.Context, cfg kafka.Config) error {
	pub, err := kafka.NewPublisher(cfg, nil)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	now := time.Now()
	var at time.Time
	r, err := dlq.New(dlq.Config{Publisher: pub, Now: func() time.Time { return at }})
	if err != nil {
		return err
	}
	kinds := []struct {
		every                     int
		reason, class, handler, f string
	}{
		{5, dlq.ReasonPermanent, "permanent", "refund", "refund %d exceeds the captured amount"},
		{3, dlq.ReasonPermanent, "permanent", "charge", "card declined for order %d: insufficient funds"},
		{1, dlq.ReasonRetriesExhausted, "retryable", "charge", "payment gateway timeout after 30s calling https://pay.example.com/v1/charges/ch_%d"},
	}
	n := 0
	for h := 7 * 24; h > 0; h-- {
		// A quiet week, then a bad evening.
		per := 0
		switch {
		case h <= 6:
			per = 4
		case h%9 == 0:
			per = 1
		}
		for i := range per {
			n++
			for _, k := range kinds {
				if n%k.every != 0 {
					continue
				}
				at = now.Add(-time.Duration(h)*time.Hour + time.Duration(i)*7*time.Minute)
				id := fmt.Sprintf("pay-%05d", 40000+n)
				m := message.NewMessage(id, []byte(fmt.Sprintf(`{"order":%d,"amount_cents":%d,"currency":"EUR"}`, 80000+n, 1250+n*7)))
				m.Metadata.Set("tenant", "acme")
				f := dlq.Failure{
					Reason: k.reason, Error: fmt.Sprintf(k.f, 80000+n), ErrorClass: k.class,
					Attempts: 5, FirstFailure: at.Add(-2 * time.Minute), LastFailure: at,
				}
				if k.reason == dlq.ReasonPermanent {
					f.Attempts, f.FirstFailure = 1, at
				}
				info := dlq.Info{OriginalTopic: "payments", Handler: k.handler, Scope: k.handler, EventID: id, Deliveries: 1, Failure: f}
				if err := r.Publish(ctx, m, info); err != nil {
					return err
				}
				break
			}
		}
	}
	return nil
}

// serve runs the console over dlqs until stop, as `idempo console` does.
func serve(ctx context.Context, brokerURL, storeURL string, dlqs []string) (string, func(), error) {
	bspec, err := backend.ParseBroker(brokerURL)
	if err != nil {
		return "", nil, err
	}
	sspec, err := backend.ParseStore(storeURL)
	if err != nil {
		return "", nil, err
	}
	broker, err := backend.OpenBroker(ctx, bspec, nil, backend.ForDLQ(true))
	if err != nil {
		return "", nil, err
	}
	st, err := backend.OpenResolutions(ctx, sspec)
	if err != nil {
		_ = broker.Close()
		return "", nil, err
	}
	closeAll := func() { _ = st.Close(); _ = broker.Close() }
	idx, err := console.NewSQLIndex(ctx, st.DB, &console.SQLIndexOptions{Dialect: st.Dialect})
	if err != nil {
		closeAll()
		return "", nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		closeAll()
		return "", nil, err
	}
	h, err := console.New(console.Config{
		DLQs: dlqs, Source: broker.Source, Resolutions: st.Store, Index: idx, Publisher: broker.Replay,
		Auth: console.Auth{Unauthenticated: true}, Addr: ln.Addr().String(), Operator: "ana@oncall",
		RefreshInterval: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		_ = ln.Close()
		closeAll()
		return "", nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = h.Run(runCtx) }()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	stop := func() {
		_ = srv.Close()
		cancel()
		<-served
		<-ran
		closeAll()
	}
	return "http://" + ln.Addr().String() + "/", stop, nil
}

// shoot photographs the console's pages.
func shoot(ctx context.Context, bin, base, demoDLQ, out string) error {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("hide-scrollbars", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()

	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		return err
	}
	// Wait until both DLQs are indexed.
	deadline := time.Now().Add(time.Minute)
	for {
		if err := chromedp.Do(bctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("h1"))); err != nil {
			return err
		}
		txt, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("main")))
		if err != nil {
			return err
		}
		if strings.Count(txt, "Indexed at") == 2 && !strings.Contains(txt, "Indexing") {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the console did not index both DLQs within a minute")
		}
		time.Sleep(500 * time.Millisecond)
	}
	save := func(name string, height int64) error {
		if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, height)); err != nil {
			return err
		}
		png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if len(png) > maxPNG {
			return fmt.Errorf("%s is %d KiB, more than %d KiB", name, len(png)>>10, maxPNG>>10)
		}
		p := filepath.Join(out, name)
		fmt.Fprintf(os.Stderr, "screenshots: %s (%d KiB)\n", p, len(png)>>10)
		return os.WriteFile(p, png, 0o644)
	}
	steps := []struct {
		name    string
		height  int64 // of the picture, in CSS pixels
		actions []chromedp.Action[chromedp.Void]
	}{
		{"console-overview.png", 900, nil},
		{"console-group.png", 860, []chromedp.Action[chromedp.Void]{
			chromedp.Click(chromedp.Search(`(//section[1]//tbody//th/a)[1]`)),
			chromedp.WaitVisible(chromedp.Search(`//p[starts-with(., "Group:")]`)),
		}},
		{"console-confirm.png", 460, []chromedp.Action[chromedp.Void]{
			chromedp.Navigate(base),
			chromedp.Click(chromedp.Search(fmt.Sprintf(`//section[h2/a[text()=%q]]//button[text()="Replay group…"]`, demoDLQ))),
			chromedp.WaitVisible(chromedp.Search(`//button[text()="Confirm the replay"]`)),
		}},
		{"console-job.png", 360, []chromedp.Action[chromedp.Void]{
			chromedp.Click(chromedp.Search(`//button[text()="Confirm the replay"]`)),
			chromedp.WaitVisible(chromedp.Search(`//p[starts-with(., "Done:")]`)),
		}},
		// An entry of the group just replayed: its resolution and history.
		{"console-entry.png", 900, []chromedp.Action[chromedp.Void]{
			chromedp.Navigate(base + "dlq/" + demoDLQ + "?all=1"),
			chromedp.Click(chromedp.Search(`(//tbody//th/a)[1]`)),
			chromedp.WaitVisible(chromedp.Search(`//h1[starts-with(., "Entry ")]`)),
		}},
	}
	for _, s := range steps {
		if err := chromedp.Do(bctx, s.actions...); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if err := save(s.name, s.height); err != nil {
			return err
		}
	}
	return nil
}
