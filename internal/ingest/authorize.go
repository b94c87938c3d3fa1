package ingest

import (
	"context"
	"fmt"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/proxy"
)

// authorize looks up the events' proxies and runs Authorize: the path of
// a request refused before it reaches the Store.
func (s *Recorder) authorize(ctx context.Context, caller auth.Principal, events []Event, batch bool) error {
	if len(events) == 0 {
		return nil
	}
	found, err := s.proxies.Lookup(ctx, proxyIDs(events))
	if err != nil {
		return fmt.Errorf("authorize events: %w", err)
	}
	return Authorize(caller, events, found, batch)
}

// proxyIDs lists the distinct proxy ids of events.
func proxyIDs(events []Event) []string {
	seen := make(map[string]struct{}, 4)
	ids := make([]string, 0, 4)
	for i := range events {
		if _, ok := seen[events[i].ProxyID]; !ok {
			seen[events[i].ProxyID] = struct{}{}
			ids = append(ids, events[i].ProxyID)
		}
	}
	return ids
}

// Authorize checks that caller may write into the proxy of every event
// (proxy.CheckWritable), found holding those proxies as they are now (a
// missing one does not exist). A request is all or nothing: the first
// failing event decides, named by its index in a batch. It is the one
// check of every path, run by the Store inside its transaction and by the
// Recorder for events that precede a decoding error.
func Authorize(caller auth.Principal, events []Event, found map[string]proxy.Proxy, batch bool) error {
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
