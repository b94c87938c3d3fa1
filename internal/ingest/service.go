package ingest

import (
	"context"
	"errors"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/proxy"
	"proxyusage/internal/telemetry"
)

// Result of recording events.
type Result struct {
	Accepted   int // newly stored
	Duplicates int // idempotent repeats, including repeats inside one batch
}

// Service records events for the API (implemented by Recorder).
type Service interface {
	RecordOne(ctx context.Context, caller auth.Principal, proxyID string, body []byte) (Result, error)
	RecordBatch(ctx context.Context, caller auth.Principal, body []byte) (Result, error)
	RecordCloudEvents(ctx context.Context, caller auth.Principal, body []byte, batch bool) (Result, error)
}

// Decoder turns request bodies into validated events (wire.Decoder). A
// batch that fails returns the events before the failing one, so that a
// lower-index authorisation failure can win, and how many events the body
// held (0: unreadable).
type Decoder interface {
	DecodeOne(body []byte, proxyID string) (Event, error)
	DecodeBatch(body []byte) (events []Event, sent int, err error)
	DecodeCloudEvents(body []byte, batch bool) (events []Event, sent int, err error)
}

// Store stores a request's events durably for a caller (store.Writer). It
// runs Authorize itself, against the proxies as they are in its
// transaction; denied reports that the request was refused by it and
// nothing was stored.
type Store interface {
	WriteAs(ctx context.Context, caller auth.Principal, events []Event, batch bool) (accepted int, denied bool, err error)
}

// Recorder decodes, authorises and stores the events of a request.
type Recorder struct {
	decoder Decoder
	proxies *proxy.Store
	writer  Store
	metrics *telemetry.Metrics
}

var _ Service = (*Recorder)(nil)

// Config configures a Recorder.
type Config struct {
	Decoder Decoder
	Proxies *proxy.Store
	Writer  Store
	Metrics *telemetry.Metrics
}

// NewRecorder returns a Recorder for cfg.
func NewRecorder(cfg Config) (*Recorder, error) {
	var errs []error
	if cfg.Decoder == nil {
		errs = append(errs, errors.New("ingest: Decoder is required"))
	}
	if cfg.Proxies == nil {
		errs = append(errs, errors.New("ingest: Proxies is required"))
	}
	if cfg.Writer == nil {
		errs = append(errs, errors.New("ingest: Writer is required"))
	}
	if cfg.Metrics == nil {
		errs = append(errs, errors.New("ingest: Metrics is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Recorder{
		decoder: cfg.Decoder,
		proxies: cfg.Proxies,
		writer:  cfg.Writer,
		metrics: cfg.Metrics,
	}, nil
}

// RecordOne records the body of the single-event endpoint.
func (s *Recorder) RecordOne(ctx context.Context, caller auth.Principal, proxyID string, body []byte) (Result, error) {
	e, err := s.decoder.DecodeOne(body, proxyID)
	return s.record(ctx, caller, []Event{e}, 1, err, false)
}

// RecordBatch records a batch body atomically: any invalid or unwritable
// event fails the whole batch, the lowest failing index deciding the error.
func (s *Recorder) RecordBatch(ctx context.Context, caller auth.Principal, body []byte) (Result, error) {
	events, sent, err := s.decoder.DecodeBatch(body)
	return s.record(ctx, caller, events, sent, err, true)
}

// record stores the decoded events of one request that carried sent events
// and counts its outcome, once: accepted and duplicate events of a stored
// request; every event it carried when the request is refused (a batch is
// atomic), at least one for a body that could not be read as events.
// Failures that are not the client's (503, 500) are not rejections: the
// client retries the same events.
func (s *Recorder) record(ctx context.Context, caller auth.Principal, events []Event, sent int, decodeErr error, batch bool) (Result, error) {
	res, err := s.store(ctx, caller, events, decodeErr, batch)
	switch {
	case err == nil:
		s.metrics.IngestEvents.WithLabelValues("accepted").Add(float64(res.Accepted))
		s.metrics.IngestEvents.WithLabelValues("duplicate").Add(float64(res.Duplicates))
	case refused(err):
		s.metrics.IngestEvents.WithLabelValues("rejected").Add(float64(max(sent, 1)))
	}
	return res, err
}

// refused reports whether err refuses the request for what it holds.
func refused(err error) bool {
	switch apperr.CodeOf(err) {
	case apperr.Internal, apperr.Unavailable:
		return false
	}
	return true
}

func (s *Recorder) store(ctx context.Context, caller auth.Principal, events []Event, decodeErr error, batch bool) (Result, error) {
	if decodeErr != nil {
		if apperr.IndexOf(decodeErr) < 0 {
			return Result{}, decodeErr
		}
		// Authorisation covers the events before the first invalid one, so a
		// lower-index unwritable proxy wins over a later bad field.
		if err := s.authorize(ctx, caller, events, batch); err != nil {
			return Result{}, err
		}
		return Result{}, decodeErr
	}
	// The writer checks the caller may write each proxy inside the flush's
	// transaction: one lookup per commit instead of one per request.
	accepted, denied, err := s.writer.WriteAs(ctx, caller, events, batch)
	if !denied {
		s.metrics.IngestBatchSize.Observe(float64(len(events)))
	}
	if err != nil {
		return Result{}, err
	}
	return Result{Accepted: accepted, Duplicates: len(events) - accepted}, nil
}

// RecordCloudEvents records a structured CloudEvent (batch false) or a
// CloudEvents batch, atomically like the native batch.
func (s *Recorder) RecordCloudEvents(ctx context.Context, caller auth.Principal, body []byte, batch bool) (Result, error) {
	events, sent, err := s.decoder.DecodeCloudEvents(body, batch)
	return s.record(ctx, caller, events, sent, err, batch)
}
