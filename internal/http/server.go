// Package http is the transport: it parses requests, calls the domain
// services and writes responses or the API error body. No business rules
// live here.
package http

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/semaphore"

	"proxyusage/internal/alert"
	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/billing"
	"proxyusage/internal/ingest"
	"proxyusage/internal/limit"
	"proxyusage/internal/proxy"
	"proxyusage/internal/telemetry"
	"proxyusage/internal/usage"
	"proxyusage/internal/user"
)

// Config wires a Server to its services: the domains' Service interfaces,
// so that the transport depends on what the domains promise, not on how
// they store it.
type Config struct {
	Addr     string // ":0" picks a free port (tests)
	Verifier *auth.Verifier
	Users    user.Service
	Proxies  proxy.Service
	Ingest   ingest.Service
	Usage    usage.Service
	Billing  billing.Service
	Limits   limit.Service
	Webhooks alert.WebhookService
	Metrics  *telemetry.Metrics
	Logger   *slog.Logger
	// Ready reports whether the service can serve (database reachable,
	// migrations applied).
	Ready func(context.Context) error
	// RouteRead marks the context of a read (GET, HEAD) as it arrives, so
	// its snapshots may be served by a standby (database.Standby.Route);
	// nil: every read on the primary.
	RouteRead func(context.Context) context.Context

	// Limits; zero means the Default* of the same name (limits.go).
	MaxInflight           int64         // requests handled at once before shedding
	MaxInflightPerUser    int           // one caller's requests in flight (429 past it)
	MaxInflightPerService int           // the same for callers with the service role
	MaxConns              int           // open client connections
	BodyBudget            int64         // request-body bytes held in memory at once
	BodyTimeout           time.Duration // time for a request body to arrive (408 past it)
	ReadTimeout           time.Duration // bounds a GET, its database statements included
	RequestTimeout        time.Duration // bounds a write's work once its body arrived
	IdleTimeout           time.Duration // keep-alive connections idle this long are closed
	ShutdownTimeout       time.Duration // drain time on Close (default 10s)
}

func (c *Config) validate() error {
	var errs []error
	for name, missing := range map[string]bool{
		"Verifier": c.Verifier == nil, "Users": c.Users == nil, "Proxies": c.Proxies == nil,
		"Ingest": c.Ingest == nil, "Usage": c.Usage == nil, "Billing": c.Billing == nil,
		"Limits": c.Limits == nil, "Webhooks": c.Webhooks == nil, "Metrics": c.Metrics == nil, "Logger": c.Logger == nil, "Ready": c.Ready == nil,
	} {
		if missing {
			errs = append(errs, errors.New("http: "+name+" is required"))
		}
	}
	return errors.Join(errs...)
}

// Server is the HTTP server. It owns its listener.
type Server struct {
	cfg      Config
	ln       net.Listener
	srv      *http.Server
	router   *mux.Router
	log      *slog.Logger
	metrics  *telemetry.Metrics
	verifier *auth.Verifier
	users    user.Service
	proxies  proxy.Service
	ingest   ingest.Service
	usage    usage.Service
	billing  billing.Service
	limits   limit.Service
	webhooks alert.WebhookService
	inflight *semaphore.Weighted
	bodies   *semaphore.Weighted
	callers  *callerLimiter
	ready    *readiness
	conns    *connLimiter
}

// NewServer builds the router for cfg.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, 10*time.Second)
	cfg.MaxInflight = cmp.Or(cfg.MaxInflight, DefaultMaxInflight)
	cfg.MaxInflightPerUser = cmp.Or(cfg.MaxInflightPerUser, DefaultMaxInflightPerUser)
	cfg.MaxInflightPerService = cmp.Or(cfg.MaxInflightPerService, DefaultMaxInflightPerService)
	cfg.MaxConns = cmp.Or(cfg.MaxConns, DefaultMaxConns)
	cfg.BodyBudget = cmp.Or(cfg.BodyBudget, DefaultBodyBudget)
	cfg.BodyTimeout = cmp.Or(cfg.BodyTimeout, DefaultBodyTimeout)
	cfg.ReadTimeout = cmp.Or(cfg.ReadTimeout, DefaultReadTimeout)
	cfg.RequestTimeout = cmp.Or(cfg.RequestTimeout, DefaultRequestTimeout)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	s := &Server{
		cfg: cfg, router: mux.NewRouter(), log: cfg.Logger, metrics: cfg.Metrics,
		verifier: cfg.Verifier, users: cfg.Users, proxies: cfg.Proxies, ingest: cfg.Ingest, usage: cfg.Usage, billing: cfg.Billing,
		limits: cfg.Limits, webhooks: cfg.Webhooks,
		callers: newCallerLimiter(cfg.MaxInflightPerUser, cfg.MaxInflightPerService),
		ready:   &readiness{probe: cfg.Ready, checks: cfg.Metrics.ReadyChecks},
	}
	s.inflight, s.bodies = newLimits(cfg.MaxInflight, cfg.BodyBudget)
	s.routes()
	s.srv = &http.Server{
		Handler: s.outer(s.guardBody(s.limitInflight(s.withTimeout(s.router)))),
		// The request head must arrive within ReadHeaderTimeout; the body
		// gets BodyTimeout (guardBody). No whole-request ReadTimeout: it
		// would also cut off a slow read after its body arrived.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		ConnState: func(c net.Conn, state http.ConnState) {
			s.conns.track(c, state)
		},
		ConnContext: withConn,
		ErrorLog:    slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) routes() {
	r := s.router
	// Keep encoded paths as sent: "%2F" stays inside an id (and fails its
	// syntax) instead of adding segments, and ".." is not cleaned into a
	// redirect.
	r.SkipClean(true)
	r.UseEncodedPath()
	r.Use(routeName)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Error(w, r, apperr.Errorf(apperr.NotFound, "no such endpoint"))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Error(w, r, apperr.Errorf(apperr.Invalid, "method %s is not allowed here", r.Method))
	})

	r.HandleFunc("/healthz", s.handleHealthz).Methods(http.MethodGet)
	r.HandleFunc("/readyz", s.handleReadyz).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.HandleFunc("/openapi.yaml", s.handleOpenAPI).Methods(http.MethodGet)

	api := r.NewRoute().Subrouter()
	api.Use(s.authenticate, s.limitPerCaller)
	api.HandleFunc("/proxies", s.handleListProxies).Methods(http.MethodGet)
	api.HandleFunc("/proxies/{proxyId}", s.handleRegisterProxy).Methods(http.MethodPut)
	api.HandleFunc("/proxies/{proxyId}", s.handleArchiveProxy).Methods(http.MethodDelete)
	api.HandleFunc("/proxy/usage/events", s.handleRecordBatch).Methods(http.MethodPost)
	api.HandleFunc("/proxy/usage/{proxyId}/record", s.handleRecordOne).Methods(http.MethodPost)
	api.HandleFunc("/proxy/usage/{proxyId}/metrics/{date}", s.handleDailyMetrics).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/{proxyId}/metrics", s.handleRangeMetrics).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/{proxyId}/summary", s.handleSummary).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/report", s.handleReport).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/aggregation", s.handleAggregation).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/aggregate", s.handleSnapshot).Methods(http.MethodPost)
	api.HandleFunc("/proxy/usage/billing", s.handleBilling).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/limits", s.handleLimits).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/access/{proxyId}", s.handleAccess).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/webhook", s.handlePutWebhook).Methods(http.MethodPut)
	api.HandleFunc("/proxy/usage/webhook", s.handleGetWebhook).Methods(http.MethodGet)
	api.HandleFunc("/proxy/usage/webhook", s.handleDeleteWebhook).Methods(http.MethodDelete)
	api.HandleFunc("/proxy/usage/webhook/deliveries", s.handleDeliveries).Methods(http.MethodGet)
	api.HandleFunc("/admin/users/{userId}", s.handlePutAccount).Methods(http.MethodPut)
	api.HandleFunc("/admin/users/{userId}", s.handleGetAccount).Methods(http.MethodGet)
}

// withTimeout bounds each request's context, and so every database call
// in it: a read (GET, HEAD) gets ReadTimeout; a write gets BodyTimeout for
// its body plus RequestTimeout for its work. Past it the statement in
// progress is cancelled and the answer is 503 (Error). A read is marked
// for a standby here (RouteRead), after it arrived.
func (s *Server) withTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, d := r.Context(), s.cfg.BodyTimeout+s.cfg.RequestTimeout
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			d = s.cfg.ReadTimeout
			if s.cfg.RouteRead != nil {
				ctx = s.cfg.RouteRead(ctx)
			}
		}
		ctx, cancel := context.WithTimeoutCause(ctx, d, &requestTimeout{after: d})
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Open starts listening and serving in the background.
func (s *Server) Open() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.conns = newConnLimiter(ln, s.cfg.MaxConns, s.metrics.HTTPOpenConns)
	go func() {
		if err := s.srv.Serve(s.conns); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", slog.Any("error", err))
		}
	}()
	return nil
}

// URL is the base URL the server listens on.
func (s *Server) URL() string {
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// Close stops accepting connections and waits for in-flight requests.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
