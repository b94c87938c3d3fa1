package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"proxyusage/internal/apperr"
	"proxyusage/internal/database"
)

// statusOf maps application error codes to HTTP status codes and to the
// API error codes (docs/api.md, "Errors").
var statusOf = map[apperr.Code]struct {
	status int
	code   string
}{
	apperr.Invalid:         {http.StatusBadRequest, "PROXY_USAGE_001"},
	apperr.Unavailable:     {http.StatusServiceUnavailable, "PROXY_USAGE_002"},
	apperr.Internal:        {http.StatusInternalServerError, "PROXY_USAGE_003"},
	apperr.Unauthenticated: {http.StatusUnauthorized, "PROXY_USAGE_004"},
	apperr.Forbidden:       {http.StatusForbidden, "PROXY_USAGE_005"},
	apperr.NotFound:        {http.StatusNotFound, "PROXY_USAGE_006"},
	apperr.Conflict:        {http.StatusConflict, "PROXY_USAGE_007"},
	apperr.TooLarge:        {http.StatusRequestEntityTooLarge, "PROXY_USAGE_008"},
	apperr.TooManyRequests: {http.StatusTooManyRequests, "PROXY_USAGE_009"},
	apperr.Timeout:         {http.StatusRequestTimeout, "PROXY_USAGE_010"},
}

// ErrorBody is the body of every non-2xx response.
type ErrorBody struct {
	Error         string `json:"error"`
	Code          string `json:"code"`
	Message       string `json:"message"`
	Status        int    `json:"status"`
	CorrelationID string `json:"correlationId"`
	Index         *int   `json:"index,omitempty"`
}

// Error writes err as the API error body. Internal errors are logged with
// the request's correlation id and replaced by a generic message; errors
// meaning the database is unreachable, or the request ran out of its time,
// become 503 with Retry-After. A failure because the client went away is
// not a server error: it is logged at info level and recorded as 499.
func Error(w http.ResponseWriter, r *http.Request, err error) {
	code := apperr.CodeOf(err)
	msg := apperr.MessageOf(err)
	if code == apperr.Internal || code == apperr.Unavailable {
		ctx := r.Context()
		var late *requestTimeout
		switch {
		case errors.As(context.Cause(ctx), &late):
			code, msg = apperr.Unavailable, fmt.Sprintf("the request did not finish within %s, retry later", late.after)
		case errors.Is(ctx.Err(), context.Canceled):
			clientClosed(w, r, err)
			return
		}
	}
	if code == apperr.Internal && database.IsUnavailable(err) {
		code, msg = apperr.Unavailable, "database unavailable, retry later"
	}
	log := loggerFrom(r.Context())
	switch code {
	case apperr.Internal:
		log.Error("internal error", slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
	case apperr.Unavailable:
		log.Warn("unavailable", slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	m := statusOf[code]
	body := ErrorBody{
		Error:         string(code),
		Code:          m.code,
		Message:       msg,
		Status:        m.status,
		CorrelationID: correlationID(r.Context()),
	}
	if i := apperr.IndexOf(err); i >= 0 {
		body.Index = &i
	}
	switch code {
	case apperr.Unavailable, apperr.TooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	case apperr.Timeout:
		// The rest of the body may still come; the connection cannot be
		// reused (RFC 9110, 408).
		w.Header().Set("Connection", "close")
	}
	writeJSON(w, m.status, body)
}

// requestTimeout is the cause of a request context that ran out of time
// (withTimeout), as opposed to one whose client went away.
type requestTimeout struct{ after time.Duration }

func (e *requestTimeout) Error() string { return fmt.Sprintf("request timeout after %s", e.after) }

// clientClosed records a request abandoned by its client: info level, and
// status 499 for the access log and metrics. Nothing is sent: the client
// is gone (should it not be, the connection is closed).
func clientClosed(w http.ResponseWriter, r *http.Request, err error) {
	loggerFrom(r.Context()).Info("client closed the request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
	w.Header().Set("Connection", "close")
	w.WriteHeader(StatusClientClosedRequest)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client may be gone; nothing to do then
}
