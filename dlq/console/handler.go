package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/idempo/idempo/dlq/dlqops"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Handler is the dead-letter console: an [http.Handler] serving its pages
// under the path it is mounted at (use [http.StripPrefix] to mount it below
// the root). It is safe for concurrent use. Pages read the index; keep it
// current with [Handler.Run] (or [Handler.Refresh]).
type Handler struct {
	cfg      Config
	idx      Index
	mux      *http.ServeMux
	tmpl     map[string]*template.Template
	csrfKey  []byte
	progress progressMap

	locksMu sync.Mutex
	locks   map[string]*sync.Mutex

	pendingMu sync.Mutex
	pending   map[string]*pending

	jobs jobs
}

var _ http.Handler = (*Handler)(nil)

// New validates cfg, applies its defaults and returns the console. It
// reads nothing yet: the first [Handler.Refresh] (or [Handler.Run]) fills
// the index.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxReplays == 0 {
		cfg.MaxReplays = dlqops.DefaultMaxReplays
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 50
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Index == nil {
		cfg.Index = NewMemoryIndex()
	}
	cfg.DLQs = slices.Clone(cfg.DLQs)
	h := &Handler{
		cfg: cfg, idx: cfg.Index, csrfKey: make([]byte, 32),
		progress: progressMap{m: map[string]progress{}},
		locks:    map[string]*sync.Mutex{}, pending: map[string]*pending{},
		jobs: jobs{m: map[string]*job{}},
	}
	_, _ = rand.Read(h.csrfKey) // never fails (crypto/rand)
	var err error
	if h.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(assets, "static") // cannot fail: embedded
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", h.overview)
	mux.HandleFunc("GET /dlq/{dlq}", h.list)
	mux.HandleFunc("GET /dlq/{dlq}/entry", h.entry)
	mux.HandleFunc("POST /dlq/{dlq}/confirm", h.confirm)
	mux.HandleFunc("POST /dlq/{dlq}/execute", h.execute)
	mux.HandleFunc("GET /jobs/{id}", h.job)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "No such page", "There is no page at "+r.URL.Path+".")
	})
	h.mux = mux
	return h, nil
}

// ServeHTTP authenticates the request, checks its Host (unauthenticated
// consoles) and its CSRF token (every POST), and serves the page.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler { //nolint:errorlint // the sentinel value itself, as net/http panics with it
				panic(v)
			}
			h.cfg.Logger.Error("dead-letter console: a page failed", "path", r.URL.Path, "panic", v)
			h.fail(w, r, http.StatusInternalServerError, "Internal error", "This page failed; the error is in the console's log.")
		}
	}()
	op, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), operatorKey{}, op))
	if r.Method == http.MethodPost {
		if h.cfg.ReadOnly {
			h.fail(w, r, http.StatusForbidden, "Read-only", "This console is read-only: it changes nothing.")
			return
		}
		if !h.validCSRF(r, op) {
			h.fail(w, r, http.StatusForbidden, "Refused", "This request has no valid CSRF token. Reload the page and try again.")
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

type operatorKey struct{}

// operator is who acts in r: the basic-auth user, else Config.Operator.
func operator(r *http.Request) string { s, _ := r.Context().Value(operatorKey{}).(string); return s }

// authenticate checks r against Config.Auth and returns the operator.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	a := h.cfg.Auth
	switch {
	case a.Unauthenticated:
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		if !IsLoopback(host) {
			h.fail(w, r, http.StatusForbidden, "Refused",
				"This console runs without authentication and answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]), against DNS rebinding.")
			return "", false
		}
		return h.cfg.Operator, true
	case a.BearerToken != "":
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.BearerToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="idempo dead-letter console"`)
			h.fail(w, r, http.StatusUnauthorized, "Authentication required", "Give the console's bearer token.")
			return "", false
		}
		return h.cfg.Operator, true
	default:
		user, pass, ok := r.BasicAuth()
		uok := subtle.ConstantTimeCompare([]byte(user), []byte(a.BasicUser))
		pok := subtle.ConstantTimeCompare([]byte(pass), []byte(a.BasicPassword))
		if !ok || uok&pok != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="idempo dead-letter console", charset="UTF-8"`)
			h.fail(w, r, http.StatusUnauthorized, "Authentication required", "Sign in with the console's user name and password.")
			return "", false
		}
		return user, true
	}
}

// csrfToken is the token the forms of op's pages carry: an HMAC of the
// operator under a key drawn at start (so a restart asks for a reload).
func (h *Handler) csrfToken(op string) string {
	m := hmac.New(sha256.New, h.csrfKey)
	_, _ = m.Write([]byte("csrf\x00" + op))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (h *Handler) validCSRF(r *http.Request, op string) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(h.csrfToken(op))) == 1
}

// knownDLQ returns the path's DLQ if the console shows it.
func (h *Handler) knownDLQ(w http.ResponseWriter, r *http.Request) (string, bool) {
	d := r.PathValue("dlq")
	if !slices.Contains(h.cfg.DLQs, d) {
		h.fail(w, r, http.StatusNotFound, "No such DLQ", "This console does not show a DLQ named "+quote(d)+".")
		return "", false
	}
	return d, true
}

// ops returns dlqops acting as the request's operator.
func (h *Handler) ops(r *http.Request) (*dlqops.Ops, error) {
	return dlqops.New(dlqops.Config{
		Source: h.cfg.Source, Resolutions: h.cfg.Resolutions, Publisher: h.cfg.Publisher,
		MaxReplays: h.cfg.MaxReplays, Operator: operator(r),
	})
}

// newID returns a random identifier for a pending confirmation.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// unavailable shows a page saying the broker, store or index failed, with
// the error's text, its credentials removed; never a stack.
func (h *Handler) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left
	}
	h.cfg.Logger.Warn("dead-letter console: "+what, "error", redact(err.Error()))
	h.fail(w, r, http.StatusServiceUnavailable, "Unavailable",
		"Could not "+what+": the broker, the resolution store or the index is unreachable or failed. "+redact(err.Error()))
}
