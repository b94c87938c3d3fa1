package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// Service validates and authorises events and hands them to the Writer.
type Service struct {
	decoder Decoder
	proxies *proxy.Store
	writer  *Writer
	metrics *telemetry.Metrics
}

// Config configures a Service.
type Config struct {
	Window  Window
	Now     func() time.Time // default time.Now
	Proxies *proxy.Store
	Writer  *Writer
	Metrics *telemetry.Metrics
}

// NewService returns a Service for cfg.
func NewService(cfg Config) (*Service, error) {
	var errs []error
	if cfg.Proxies == nil {
		errs = append(errs, errors.New("ingest: Proxies is required"))
	}
	if cfg.Writer == nil {
		errs = append(errs, errors.New("ingest: Writer is required"))
	}
	if cfg.Metrics == nil {
		errs = append(errs, errors.New("ingest: Metrics is required"))
	}
	if cfg.Window.Late <= 0 || cfg.Window.Future <= 0 {
		errs = append(errs, errors.New("ingest: Window must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{
		decoder: Decoder{Window: cfg.Window, Now: cfg.Now},
		proxies: cfg.Proxies,
		writer:  cfg.Writer,
		metrics: cfg.Metrics,
	}, nil
}

// RecordOne records the body of the single-event endpoint.
func (s *Service) RecordOne(ctx context.Context, caller auth.Principal, proxyID string, body []byte) (Result, error) {
	e, err := s.decoder.DecodeOne(body, proxyID)
	return s.record(ctx, caller, []Event{e}, 1, err, false)
}

// RecordBatch records a batch body atomically: any invalid or unwritable
// event fails the whole batch, the lowest failing index deciding the error.
func (s *Service) RecordBatch(ctx context.Context, caller auth.Principal, body []byte) (Result, error) {
	events, sent, err := s.decoder.DecodeBatch(body)
	return s.record(ctx, caller, events, sent, err, true)
}

// record stores the decoded events of one request that carried sent events
// and counts its outcome, once: accepted and duplicate events of a stored
// request; every event it carried when the request is refused (a batch is
// atomic), at least one for a body that could not be read as events.
// Failures that are not the client's (503, 500) are not rejections: the
// client retries the same events.
func (s *Service) record(ctx context.Context, caller auth.Principal, events []Event, sent int, decodeErr error, batch bool) (Result, error) {
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

func (s *Service) store(ctx context.Context, caller auth.Principal, events []Event, decodeErr error, batch bool) (Result, error) {
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

func (s *Service) authorize(ctx context.Context, caller auth.Principal, events []Event, batch bool) error {
	if len(events) == 0 {
		return nil
	}
	seen := make(map[string]struct{}, 4)
	ids := make([]string, 0, 4)
	for i := range events {
		if _, ok := seen[events[i].ProxyID]; !ok {
			seen[events[i].ProxyID] = struct{}{}
			ids = append(ids, events[i].ProxyID)
		}
	}
	found, err := s.proxies.Lookup(ctx, ids)
	if err != nil {
		return fmt.Errorf("authorize events: %w", err)
	}
	for i := range events {
		var p *proxy.Proxy
		if f, ok := found[events[i].ProxyID]; ok {
			p = &f
		}
		if err := proxy.CheckWritable(caller, p); err != nil {
			if batch {
				return apperr.AtIndex(err, i)
			}
			return err
		}
	}
	return nil
}
