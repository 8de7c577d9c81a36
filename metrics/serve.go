package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where [Serve] exposes the metrics.
const Path = "/metrics"

// shutdownTimeout bounds how long [Serve]'s stop waits for scrapes in
// flight before closing their connections.
const shutdownTimeout = 5 * time.Second

// Serve serves the metrics gathered by reg over HTTP on addr, at [Path],
// until ctx ends or stop is called. addr is a host:port; ":0" picks a free
// port, returned as actualAddr (e.g. "[::]:41234").
//
// stop shuts the server down (letting scrapes in flight finish for up to 5
// seconds), waits for its goroutines to exit and returns the first error
// the server met; it may be called any number of times, before or after ctx
// ends, and always returns the same result. When ctx ends the server shuts
// down by itself and leaves no goroutine behind; calling stop is then only
// needed to learn the result.
//
// Serve is a convenience for processes that have no HTTP server of their
// own; otherwise mount promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
// on it.
func Serve(ctx context.Context, addr string, reg prometheus.Gatherer) (stop func() error, actualAddr string, err error) {
	if reg == nil {
		return nil, "", errors.New("metrics: Serve needs a Gatherer (e.g. the *prometheus.Registry passed to New)")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("metrics: listening on %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	stopping := make(chan struct{})
	done := make(chan struct{})
	var result error
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
		case <-stopping:
		case err := <-served:
			// Serve failed on its own; it closed the listener.
			result = fmt.Errorf("metrics: serving: %w", err)
			return
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			result = fmt.Errorf("metrics: shutting down: %w", errors.Join(err, srv.Close()))
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			result = errors.Join(result, fmt.Errorf("metrics: serving: %w", err))
		}
	}()

	var once sync.Once
	stop = func() error {
		once.Do(func() { close(stopping) })
		<-done
		return result
	}
	return stop, ln.Addr().String(), nil
}
