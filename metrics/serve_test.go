package metrics_test

import (
	"context"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/metrics"
)

func newServed(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	require.NoError(t, err)
	m.Register("billing", "orders")
	return reg
}

// noKeepAlive is a client whose connections do not outlive a request, so
// goleak sees no idle connection goroutines.
func noKeepAlive() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func TestServeStop(t *testing.T) {
	t.Parallel()
	reg := newServed(t)

	stop, addr, err := metrics.Serve(context.Background(), "127.0.0.1:0", reg)
	require.NoError(t, err)
	body := get(t, noKeepAlive(), "http://"+addr+metrics.Path)
	for _, name := range documented {
		require.Contains(t, body, "# HELP "+name+" ")
	}

	require.NoError(t, stop())
	require.NoError(t, stop(), "stop is idempotent")
	_, err = net.Dial("tcp", addr)
	require.Error(t, err, "the listener is closed once stop returns")
}

func TestServeContext(t *testing.T) {
	t.Parallel()
	reg := newServed(t)

	ctx, cancel := context.WithCancel(context.Background())
	stop, addr, err := metrics.Serve(ctx, "127.0.0.1:0", reg)
	require.NoError(t, err)
	get(t, noKeepAlive(), "http://"+addr+metrics.Path)

	cancel()
	// stop only waits for the shutdown the context started.
	require.NoError(t, stop())
	_, err = net.Dial("tcp", addr)
	require.Error(t, err)
}

func TestServeAnyInterface(t *testing.T) {
	t.Parallel()
	reg := newServed(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, addr, err := metrics.Serve(ctx, ":0", reg)
	require.NoError(t, err)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	require.NotEqual(t, "0", port)
	get(t, noKeepAlive(), "http://"+net.JoinHostPort("127.0.0.1", port)+metrics.Path)
	require.NoError(t, stop())
}

func TestServeErrors(t *testing.T) {
	t.Parallel()
	reg := newServed(t)

	_, _, err := metrics.Serve(context.Background(), "127.0.0.1:0", nil)
	require.ErrorContains(t, err, "Gatherer")

	_, _, err = metrics.Serve(context.Background(), "not an address", reg)
	require.ErrorContains(t, err, "listening")

	stop, addr, err := metrics.Serve(context.Background(), "127.0.0.1:0", reg)
	require.NoError(t, err)
	defer func() { require.NoError(t, stop()) }()
	_, _, err = metrics.Serve(context.Background(), addr, reg)
	require.ErrorContains(t, err, "listening", "the address is in use")
}
