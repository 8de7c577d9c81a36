package console

import (
	"context"
	"net/http/httptest"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// TestBrowser drives the console in a real headless Chromium (Debian's
// chromium; scripts/services.sh installs it): search an event ID, then
// replay a whole group from the overview through its dry run and
// confirmation, without JavaScript of the console's own.
func TestBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (scripts/services.sh installs it)")
	}
	b := setup(t, func(c *Config) {
		c.Auth = Auth{Unauthenticated: true}
		c.Addr = "127.0.0.1:0"
		c.Operator = "oncall"
	})
	b.refresh(t)
	srv := httptest.NewServer(b.h)
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()

	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		require.NoError(t, err, "the text of %s", sel)
		return s
	}
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("h2")),
	), "the overview")
	require.Contains(t, text("main"), "orders.dlq: 6 unresolved")

	// Search an event ID from the list page's form.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.Search(`//a[text()="orders.dlq"]`)),
		chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), "evt-p2"),
		chromedp.Submit(chromedp.CSS("#q")),
		chromedp.WaitVisible(chromedp.Search(`//p[contains(., "Entries 1–1 of 1")]`)),
	), "the search")
	require.Contains(t, text("tbody"), "evt-p2")

	// Replay the payment group: dry run, confirmation, result.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.Click(chromedp.Search(`(//button[text()="Replay group…"])[1]`)),
		chromedp.WaitVisible(chromedp.Search(`//li[contains(., "3 to replay")]`)),
		chromedp.Click(chromedp.Search(`//button[text()="Confirm the replay"]`)),
		chromedp.WaitVisible(chromedp.Search(`//p[contains(., "3 replayed")]`)),
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("h2")),
	), "the group replay")
	require.Contains(t, text("main"), "orders.dlq: 3 unresolved")
	require.Equal(t, 3, b.pub.count("orders"))
	recs, err := b.res.Resolutions(context.Background(), testDLQ)
	require.NoError(t, err)
	for _, id := range []string{"p1", "p2", "p3"} {
		require.Equal(t, "oncall", recs[id].By, id)
	}
	cancel()
	cancelAlloc()
}
