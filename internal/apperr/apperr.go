// Package apperr defines the one error type the service returns to clients.
// Every failure a user may see is an *Error with a Code; anything else is an
// internal error whose details are logged and never sent.
package apperr

import (
	"errors"
	"fmt"
)

// Code identifies a class of failure; the HTTP layer maps it to a status and
// to the API error code (PROXY_USAGE_0xx).
type Code string

const (
	Invalid         Code = "INVALID_REQUEST"
	Unavailable     Code = "SERVICE_UNAVAILABLE"
	Internal        Code = "INTERNAL_SERVER_ERROR"
	Unauthenticated Code = "UNAUTHENTICATED"
	Forbidden       Code = "FORBIDDEN"
	NotFound        Code = "NOT_FOUND"
	Conflict        Code = "CONFLICT"
	TooLarge        Code = "PAYLOAD_TOO_LARGE"
	// TooManyRequests: the caller already has as many requests in flight
	// as its limit allows.
	TooManyRequests Code = "TOO_MANY_REQUESTS"
	// Timeout: the request body did not arrive in time.
	Timeout Code = "REQUEST_TIMEOUT"
)

// Error is a failure that is safe to show to the client.
type Error struct {
	Code    Code
	Message string
	// Index is the 0-based position of the failing event in a batch, or -1.
	Index int
}

func (e *Error) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("%s: event %d: %s", e.Code, e.Index, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with a formatted message and no batch index.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Index: -1}
}

// AtIndex returns a copy of err that names the failing batch index. Errors
// that are not *Error become internal errors.
func AtIndex(err error, index int) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	c := *e
	c.Index = index
	return &c
}

// CodeOf returns the code of err, Internal for anything that is not an *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// MessageOf returns the client-safe message of err; internal errors get a
// generic message so that nothing leaks.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// IndexOf returns the batch index carried by err, or -1.
func IndexOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Index
	}
	return -1
}
