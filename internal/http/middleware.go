package http

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
)

type ctxKey int

const (
	keyInfo ctxKey = iota
	keyLogger
)

// requestInfo is filled in as the request travels through the router, so
// the outer middleware can label metrics by route template.
type requestInfo struct {
	correlationID string
	route         string
}

func correlationID(ctx context.Context) string {
	if info, ok := ctx.Value(keyInfo).(*requestInfo); ok {
		return info.correlationID
	}
	return ""
}

func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(keyLogger).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

var validCorrelationID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status code written.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// outer wraps the whole router: correlation id, logger, panic recovery,
// metrics and the access log. It runs for unmatched routes too.
func (s *Server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Correlation-ID")
		if id == "" {
			id = r.Header.Get("X-Request-ID")
		}
		if !validCorrelationID.MatchString(id) {
			id = newCorrelationID()
		}
		info := &requestInfo{correlationID: id, route: "unmatched"}
		log := s.log.With(slog.String("correlationId", id))
		ctx := context.WithValue(context.WithValue(r.Context(), keyInfo, info), keyLogger, log)
		r = r.WithContext(ctx)
		w.Header().Set("X-Correlation-ID", id)
		rec := &statusRecorder{ResponseWriter: w}

		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				Error(rec, r, fmt.Errorf("panic: %v", v))
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			method := metricMethod(r.Method)
			s.metrics.HTTPRequests.WithLabelValues(info.route, method, strconv.Itoa(status)).Inc()
			s.metrics.HTTPDuration.WithLabelValues(info.route, method).Observe(elapsed.Seconds())
			log.LogAttrs(ctx, slog.LevelDebug, "request",
				slog.String("method", r.Method), slog.String("route", info.route),
				slog.Int("status", status), slog.Duration("took", elapsed))
		}()
		next.ServeHTTP(rec, r)
	})
}

// routeName records the matched route template for metrics.
func routeName(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info, ok := r.Context().Value(keyInfo).(*requestInfo); ok {
			if route := mux.CurrentRoute(r); route != nil {
				if tpl, err := route.GetPathTemplate(); err == nil {
					info.route = tpl
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate verifies the bearer token and makes sure the user row exists.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.verifier.Verify(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="proxyusage"`)
			Error(w, r, err)
			return
		}
		markAuthenticated(r.Context())
		if err := s.users.Ensure(r.Context(), p.UserID); err != nil {
			Error(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
}

// caller returns the authenticated principal; routes behind authenticate
// always have one.
func caller(r *http.Request) auth.Principal {
	p, _ := auth.FromContext(r.Context())
	return p
}

// requireAdmin refuses callers without the admin role.
func requireAdmin(r *http.Request) error {
	if !caller(r).IsAdmin() {
		return apperr.Errorf(apperr.Forbidden, "this endpoint requires the admin role")
	}
	return nil
}

// pathVar returns a decoded path variable. The router matches on the
// encoded path, so an encoded "/" stays inside the variable.
func pathVar(r *http.Request, name string) string {
	v := mux.Vars(r)[name]
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// metricMethod bounds the method label: clients choose the method string,
// so anything unusual is counted as "other".
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}
