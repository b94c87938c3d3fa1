package http_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"proxyusage/api"
	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// contract checks HTTP exchanges against api/openapi.yaml: every response
// must match the document (status, headers, media type, body schema, no
// undeclared fields); every request must match it too unless the test says
// it deliberately breaks the contract, and then the document must reject
// it as well. Install it as an http.Client transport.
type contract struct {
	v     validator.Validator
	loose validator.Validator // without strict mode, for GET /openapi.yaml
	model *v3.Document
	base  http.RoundTripper

	mu   sync.Mutex
	last *exchange
	seen map[string]bool // "METHOD /template STATUS"
}

// exchange is one validated request/response pair.
type exchange struct {
	method, path string
	status       int
	reqErrs      []*verrors.ValidationError
	respErrs     []*verrors.ValidationError
}

func newContract(t testing.TB) *contract {
	t.Helper()
	doc, err := libopenapi.NewDocument(api.OpenAPI)
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("openapi.yaml model: %v", err)
	}
	opts := []config.Option{
		config.WithFormatAssertions(),     // date, date-time, ipv4/ipv6 are checked
		config.WithStandardBodyDecoders(), // text/csv, application/yaml, text/plain bodies are decoded and checked
		config.WithRejectUnsupportedBodyContent(),
		config.WithRejectUndeclaredRequestBody(),
	}
	// Strict mode: undeclared body fields, query parameters and response
	// headers are errors, so the document lists everything the service
	// sends. The document itself (GET /openapi.yaml) is checked without it:
	// its schema only pins the top level, and the test compares the body
	// with the embedded bytes anyway.
	v, errs := validator.NewValidator(doc, append(opts, config.WithStrictMode(),
		config.WithStrictIgnoredHeadersExtra("x-content-type-options"))...)
	if len(errs) > 0 {
		t.Fatalf("openapi.yaml validator: %v", errs)
	}
	loose, errs := validator.NewValidator(doc, opts...)
	if len(errs) > 0 {
		t.Fatalf("openapi.yaml validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("openapi.yaml is not a valid OpenAPI document: %s", describe(verrs))
	}
	return &contract{v: v, loose: loose, model: &model.Model, base: http.DefaultTransport, seen: map[string]bool{}}
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "\n  - %s: %s", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s at %s (%s)", f.Reason, f.FieldPath, f.KeywordLocation)
		}
	}
	return b.String()
}

// RoundTrip sends req and validates the pair. The bodies are buffered so
// both the validator and the caller can read them.
func (c *contract) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))

	vreq := req.Clone(req.Context())
	if reqBody != nil {
		vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	v := c.v
	if req.URL.Path == "/openapi.yaml" {
		v = c.loose
	}
	_, reqErrs := v.ValidateHttpRequestSync(vreq)
	vresp := *resp
	vresp.Body = io.NopCloser(bytes.NewReader(respBody))
	vreq = req.Clone(req.Context())
	_, respErrs := v.ValidateHttpResponse(vreq, &vresp)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = &exchange{method: req.Method, path: req.URL.RequestURI(), status: resp.StatusCode, reqErrs: reqErrs, respErrs: respErrs}
	return resp, nil
}

// operation returns the documented "METHOD /template" for a request, by
// the service's own router.
func operation(router *mux.Router, req *http.Request) string {
	var m mux.RouteMatch
	if !router.Match(req, &m) || m.Route == nil {
		return ""
	}
	tpl, err := m.Route.GetPathTemplate()
	if err != nil {
		return ""
	}
	return req.Method + " " + tpl
}

// documented lists "METHOD /path" of every operation and "METHOD /path
// STATUS" of every documented response.
func (c *contract) documented() (ops, responses []string) {
	for p := c.model.Paths.PathItems.First(); p != nil; p = p.Next() {
		for o := p.Value().GetOperations().First(); o != nil; o = o.Next() {
			op := strings.ToUpper(o.Key()) + " " + p.Key()
			ops = append(ops, op)
			for r := o.Value().Responses.Codes.First(); r != nil; r = r.Next() {
				responses = append(responses, op+" "+r.Key())
			}
		}
	}
	sort.Strings(ops)
	sort.Strings(responses)
	return ops, responses
}

// session drives the service through a contract-checking client.
type session struct {
	t      *testing.T
	env    *apptest.Env
	c      *contract
	router *mux.Router
}

type callOpt func(*http.Request, *callFlags)

type callFlags struct{ breaks string }

// breaks marks a request that violates the document on purpose (bad date,
// missing token, oversized batch...): the validator must reject it too,
// with a message containing why.
func breaks(why string) callOpt { return func(_ *http.Request, f *callFlags) { f.breaks = why } }

func withHeader(k, v string) callOpt {
	return func(r *http.Request, _ *callFlags) { r.Header.Set(k, v) }
}

func (s *session) do(method, path, token string, body any, want int, opts ...callOpt) apptest.Response {
	s.t.Helper()
	req := s.env.Request(method, path, token, body)
	var flags callFlags
	for _, o := range opts {
		o(req, &flags)
	}
	op := operation(s.router, req)
	r := s.env.Send(req)
	s.c.mu.Lock()
	x := s.c.last
	s.c.mu.Unlock()
	if r.Status != want {
		s.t.Fatalf("%s %s = %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	if len(x.respErrs) > 0 {
		s.t.Errorf("%s %s → %d: response does not match openapi.yaml:%s\n%.400s", method, path, r.Status, describe(x.respErrs), r.Body)
	}
	switch {
	case flags.breaks != "" && !slices.ContainsFunc(x.reqErrs, func(e *verrors.ValidationError) bool { return strings.Contains(e.Message, flags.breaks) }):
		s.t.Errorf("%.80s %.80s: the request breaks the contract on purpose (%s), but openapi.yaml does not refuse it for that:%s", method, path, flags.breaks, describe(x.reqErrs))
	case flags.breaks == "" && len(x.reqErrs) > 0:
		s.t.Errorf("%s %s: request does not match openapi.yaml:%s", method, path, describe(x.reqErrs))
	}
	if op != "" {
		s.c.seen[fmt.Sprintf("%s %d", op, r.Status)] = true
	}
	return r
}

// TestOpenAPIContract drives a realistic session through the running
// service and validates every request and response against
// api/openapi.yaml; it also checks that the document and the router list
// the same operations, and that every documented 2xx and 4xx response was
// actually produced.
func TestOpenAPIContract(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		c := newContract(t)
		env.Client.Transport = c
		s := &session{t: t, env: env, c: c, router: env.Main.Server.Router()}

		checkRoutes(t, s.router, c)
		runSession(t, s)

		// Every documented success and client error was produced by the
		// real service: the document promises nothing it does not do.
		_, responses := c.documented()
		var missing []string
		for _, r := range responses {
			if strings.HasSuffix(r, " 500") || strings.HasSuffix(r, " 503") {
				continue // server faults: covered by the overload and outage tests
			}
			if strings.HasSuffix(r, " 408") || strings.HasSuffix(r, " 429") {
				continue // limits: TestOpenAPILimitResponses
			}
			if !c.seen[r] {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			t.Errorf("documented responses the session never produced:\n  %s", strings.Join(missing, "\n  "))
		}
	})
}

// checkRoutes compares the router's routes with the document's operations.
func checkRoutes(t *testing.T, router *mux.Router, c *contract) {
	t.Helper()
	var routes []string
	err := router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return nil // the authenticated subrouter itself has no path
		}
		methods, err := route.GetMethods()
		if err != nil {
			t.Errorf("route %s has no method restriction", tpl)
			return nil
		}
		for _, m := range methods {
			routes = append(routes, m+" "+tpl)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(routes)
	ops, _ := c.documented()
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, o := range ops {
		if !slices.Contains(routes, o) {
			t.Errorf("openapi.yaml documents %s, which the router does not serve", o)
		}
	}
	if len(routes) < 18 {
		t.Errorf("walked only %d routes: %v", len(routes), routes)
	}
}

func runSession(t *testing.T, s *session) {
	admin := apptest.Token(t, "root", "admin")
	svc := apptest.Token(t, "ingestor", "service")
	alice := apptest.Token(t, "alice")
	bob := apptest.Token(t, "bob")
	dave := apptest.Token(t, "dave")

	now := time.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	day := func(d int) string { return today.AddDate(0, 0, d).Format("2006-01-02") }
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339Nano) }

	// Operations endpoints, no token.
	s.do("GET", "/healthz", "", nil, 200)
	s.do("GET", "/readyz", "", nil, 200)
	s.do("GET", "/metrics", "", nil, 200)
	r := s.do("GET", "/openapi.yaml", "", nil, 200)
	if !bytes.Equal(r.Body, api.OpenAPI) || r.Header.Get("Content-Type") != "application/yaml" {
		t.Errorf("GET /openapi.yaml does not serve the embedded document (%s)", r.Header.Get("Content-Type"))
	}

	// Authentication.
	s.do("GET", "/proxies", "", nil, 401, breaks("Authorization header"))
	s.do("GET", "/proxies", "not-a-jwt", nil, 401)

	// Proxies.
	s.do("PUT", "/proxies/a1", alice, map[string]string{"name": "first"}, 201, withHeader("X-Correlation-ID", "session-1"))
	s.do("PUT", "/proxies/a1", alice, map[string]string{"name": "first, renamed"}, 200, withHeader("X-Request-ID", "session-2"))
	s.do("PUT", "/proxies/a2", alice, nil, 201)
	s.do("PUT", "/proxies/a3", alice, map[string]string{"name": "to archive"}, 201)
	s.do("PUT", "/proxies/b1", bob, nil, 201)
	s.do("PUT", "/proxies/d1", dave, nil, 201)
	s.do("PUT", "/proxies/a1", bob, nil, 409)
	s.do("PUT", "/proxies/bad%20id", alice, nil, 400, breaks("Path parameter 'proxyId'"))
	s.do("PUT", "/proxies/a4", alice, `{"name": `+strings.Repeat(" ", 70<<10)+`"x"}`, 413)
	s.do("DELETE", "/proxies/a3", alice, nil, 204)
	s.do("DELETE", "/proxies/b1", alice, nil, 404)
	s.do("GET", "/proxies", alice, nil, 200)
	if m := s.do("GET", "/proxies?limit=2", alice, nil, 200).JSON(t); m["nextAfter"] != "a2" || m["count"] != float64(2) {
		t.Errorf("first page of 2: %v", m)
	}
	if m := s.do("GET", "/proxies?limit=2&after=a2", alice, nil, 200).JSON(t); m["nextAfter"] != nil || m["count"] != float64(1) {
		t.Errorf("last page: %v", m)
	}
	s.do("GET", "/proxies?limit=0", alice, nil, 400, breaks("Query parameter 'limit'"))
	s.do("GET", "/proxies?limit=1001", alice, nil, 400, breaks("Query parameter 'limit'"))
	s.do("GET", "/proxies?after=bad%20id", alice, nil, 400, breaks("Query parameter 'after'"))
	s.do("PUT", "/proxies/a5", alice, `{"NAME":"x"}`, 400, breaks("request body"))

	// Single events: a connection, a repeat, a transfer, an error.
	start := map[string]any{"eventType": "connection_start", "eventId": "a1-start-1", "timestamp": at(-2 * time.Hour),
		"eventData": map[string]any{"connectionId": "c1", "ipAddress": "203.0.113.7", "latencyMs": 12.5}}
	s.do("POST", "/proxy/usage/a1/record", alice, start, 201)
	r = s.do("POST", "/proxy/usage/a1/record", alice, start, 200)
	if !r.JSON(t)["duplicate"].(bool) {
		t.Errorf("repeat is not a duplicate: %s", r.Body)
	}
	s.do("POST", "/proxy/usage/a1/record", alice, map[string]any{"eventType": "connection_end", "eventId": "a1-end-1", "timestamp": at(-time.Hour),
		"eventData": map[string]any{"connectionId": "c1", "durationSeconds": 3600, "bytesSent": 5_000_000, "bytesReceived": 700_000, "ipAddress": "2001:db8::1"}}, 201)
	s.do("POST", "/proxy/usage/a1/record", alice, map[string]any{"eventType": "data_transfer", "eventData": map[string]any{"dataBytes": 1024}}, 201)
	s.do("POST", "/proxy/usage/b1/record", svc, map[string]any{"eventType": "error", "eventData": map[string]any{"errorMessage": "upstream refused"}}, 201)
	s.do("POST", "/proxy/usage/a1/record", alice, map[string]any{"eventType": "connection_start"}, 400, breaks("request body"))
	s.do("POST", "/proxy/usage/a1/record", alice, map[string]any{"eventType": "error", "EVENTTYPE": "data_transfer"}, 400, breaks("request body"))
	s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": []map[string]any{{"proxyId": "a1", "eventType": "error", "eventData": map[string]any{"BytesSent": 1}}}}, 400, breaks("request body"))
	s.do("POST", "/proxy/usage/b1/record", alice, map[string]any{"eventType": "error"}, 404)
	s.do("POST", "/proxy/usage/a3/record", alice, map[string]any{"eventType": "error"}, 409)
	s.do("POST", "/proxy/usage/a1/record", alice, map[string]any{"eventType": "error",
		"eventData": map[string]any{"errorMessage": strings.Repeat("x", 70<<10)}}, 413, breaks("request body"))

	// Batches: new events, a repeat of a stored one and a repeat inside the batch.
	var events []map[string]any
	for i := range 20 {
		p := []string{"a1", "a2"}[i%2]
		events = append(events, map[string]any{"proxyId": p, "eventType": "data_transfer", "eventId": fmt.Sprintf("batch-%d", i),
			"timestamp": today.AddDate(0, 0, -1-i%3).Add(time.Duration(i) * time.Minute).Format(time.RFC3339),
			"eventData": map[string]any{"bytesSent": 1_000_000 * (i + 1), "bytesReceived": 1000, "latencyMs": float64(i) + 0.25}})
	}
	events = append(events, events[3], map[string]any{"proxyId": "a1", "eventType": "connection_start", "eventId": "a1-start-1",
		"eventData": map[string]any{"connectionId": "c1"}})
	r = s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": events}, 201)
	if m := r.JSON(t); m["accepted"] != float64(20) || m["duplicates"] != float64(2) {
		t.Errorf("batch result = %s, want 20 accepted and 2 duplicates", r.Body)
	}
	s.do("POST", "/proxy/usage/events", svc, map[string]any{"events": []map[string]any{
		{"proxyId": "b1", "eventType": "connection_start", "eventData": map[string]any{"connectionId": "x"}},
		{"proxyId": "d1", "eventType": "data_transfer", "eventData": map[string]any{"bytesSent": 40_000_000_000}},
	}}, 201)
	bad := []map[string]any{events[0], events[1], {"proxyId": "a1", "eventType": "data_transfer", "eventData": map[string]any{"bytesSent": -1}}}
	if m := s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": bad}, 400, breaks("request body")).JSON(t); m["index"] != float64(2) {
		t.Errorf("batch error index = %v, want 2", m["index"])
	}
	for _, data := range []map[string]any{{"bytesSent": 1<<50 + 1}, {"bytesReceived": 1<<50 + 1}, {"dataBytes": 1<<50 + 1},
		{"latencyMs": 3_600_001}} {
		over := []map[string]any{events[0], {"proxyId": "a1", "eventType": "data_transfer", "eventData": data}}
		if m := s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": over}, 400, breaks("request body")).JSON(t); m["index"] != float64(1) {
			t.Errorf("batch error index = %v, want 1", m["index"])
		}
	}
	if m := s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": []map[string]any{events[0], {"proxyId": "b1", "eventType": "error"}}}, 404).JSON(t); m["index"] != float64(1) {
		t.Errorf("batch error index = %v, want 1", m["index"])
	}
	s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": []map[string]any{{"proxyId": "a3", "eventType": "error"}}}, 409)
	s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": []map[string]any{}}, 400, breaks("request body"))
	many := make([]map[string]any, 10_001)
	for i := range many {
		many[i] = map[string]any{"proxyId": "a1", "eventType": "error"}
	}
	s.do("POST", "/proxy/usage/events", alice, map[string]any{"events": many}, 413, breaks("request body"))

	// CloudEvents, one and a batch (a repeat of (source, id) is a duplicate).
	ceType := withHeader("Content-Type", "application/cloudevents+json")
	ceBatch := withHeader("Content-Type", "application/cloudevents-batch+json")
	ce := func(id, typ, subject string, data map[string]any) map[string]any {
		e := map[string]any{"specversion": "1.0", "id": id, "source": "/edge/fra-1", "type": "proxy.usage." + typ,
			"subject": subject, "time": at(-30 * time.Minute)}
		if data != nil {
			e["datacontenttype"], e["data"] = "application/json", data
		}
		return e
	}
	s.do("POST", "/proxy/usage/events", svc, ce("ce-1", "data_transfer", "a1", map[string]any{"bytesSent": 2048}), 201, ceType)
	r = s.do("POST", "/proxy/usage/events", svc, []any{
		ce("ce-1", "data_transfer", "a1", map[string]any{"bytesSent": 2048}),
		ce("ce-2", "connection_start", "a2", map[string]any{"connectionId": "k1", "latencyMs": 3}),
		ce("ce-3", "error", "b1", map[string]any{"errorMessage": "reset"}),
	}, 201, ceBatch)
	if m := r.JSON(t); m["accepted"] != float64(2) || m["duplicates"] != float64(1) {
		t.Errorf("CloudEvents batch result = %s, want 2 accepted and 1 duplicate", r.Body)
	}
	if m := s.do("POST", "/proxy/usage/events", svc, []any{ce("ce-4", "error", "a1", nil), ce("ce-5", "teleport", "a1", nil)}, 400,
		ceBatch, breaks("request body")).JSON(t); m["index"] != float64(1) {
		t.Errorf("CloudEvents batch error index = %v, want 1", m["index"])
	}
	s.do("POST", "/proxy/usage/events", alice, ce("ce-6", "error", "b1", nil), 404, ceType)

	// One proxy's metrics.
	s.do("GET", "/proxy/usage/a1/metrics/"+day(0), alice, nil, 200)
	s.do("GET", "/proxy/usage/a1/metrics/"+day(-30), alice, nil, 200) // no events: zeros and nulls
	s.do("GET", "/proxy/usage/a1/metrics/"+day(0), admin, nil, 200)
	s.do("GET", "/proxy/usage/a1/metrics/2026-02-30", alice, nil, 400, breaks("Path parameter 'date'"))
	s.do("GET", "/proxy/usage/b1/metrics/"+day(0), alice, nil, 404)
	rng := "?startDate=" + day(-6) + "&endDate=" + day(0)
	s.do("GET", "/proxy/usage/a1/metrics"+rng, alice, nil, 200)
	s.do("GET", "/proxy/usage/a1/metrics"+rng, alice, nil, 200, withHeader("Accept", "text/csv"))
	s.do("GET", "/proxy/usage/a1/metrics"+rng+"&format=csv", alice, nil, 200)
	s.do("GET", "/proxy/usage/a1/metrics"+rng+"&format=json", alice, nil, 200, withHeader("Accept", "text/csv"))
	s.do("GET", "/proxy/usage/a1/metrics?startDate=2026-13-01&endDate="+day(0), alice, nil, 400, breaks("Query parameter 'startDate'"))
	s.do("GET", "/proxy/usage/a1/metrics"+rng+"&format=xml", alice, nil, 400, breaks("Query parameter 'format'"))
	s.do("GET", "/proxy/usage/a1/metrics?startDate="+day(0)+"&endDate="+day(-6), alice, nil, 400)
	s.do("GET", "/proxy/usage/b1/metrics"+rng, alice, nil, 404, withHeader("Accept", "text/csv"))
	s.do("GET", "/proxy/usage/a1/summary", alice, nil, 200)
	s.do("GET", "/proxy/usage/a2/summary", alice, nil, 200)
	s.do("GET", "/proxy/usage/b1/summary", alice, nil, 404)

	// Reports.
	for _, q := range []string{"", "&groupBy=day", "&groupBy=proxy"} {
		s.do("GET", "/proxy/usage/report"+rng+q, alice, nil, 200)
		s.do("GET", "/proxy/usage/report"+rng+q, alice, nil, 200, withHeader("Accept", "text/csv;q=0.9, application/json;q=0.5"))
		s.do("GET", "/proxy/usage/report"+rng+q+"&format=csv", alice, nil, 200)
	}
	s.do("GET", "/proxy/usage/report"+rng+"&userId=alice", admin, nil, 200)
	s.do("GET", "/proxy/usage/report"+rng+"&userId=alice", alice, nil, 200)
	s.do("GET", "/proxy/usage/report"+rng+"&userId=bob", alice, nil, 403)
	s.do("GET", "/proxy/usage/report"+rng+"&userId="+strings.Repeat("x", 257), admin, nil, 400, breaks("Query parameter 'userId'"))
	s.do("GET", "/proxy/usage/report"+rng+"&groupBy=week", alice, nil, 400, breaks("Query parameter 'groupBy'"))
	s.do("GET", "/proxy/usage/report?startDate="+day(-400)+"&endDate="+day(0), alice, nil, 400)

	// Aggregations and snapshots.
	period := "?periodStart=" + day(-6) + "&periodEnd=" + day(0)
	s.do("GET", "/proxy/usage/aggregation"+period, alice, nil, 200)
	s.do("GET", "/proxy/usage/aggregation"+period+"&userId=alice", admin, nil, 200)
	s.do("GET", "/proxy/usage/aggregation"+period+"&groupBy=tier", admin, nil, 200)
	s.do("GET", "/proxy/usage/aggregation"+period+"&groupBy=tier", alice, nil, 403)
	s.do("GET", "/proxy/usage/aggregation"+period+"&userId=bob", alice, nil, 403)
	s.do("GET", "/proxy/usage/aggregation?periodStart="+day(0), alice, nil, 400, breaks("Query parameter 'periodEnd'"))
	snap := map[string]string{"periodStart": day(-6), "periodEnd": day(0)}
	s.do("POST", "/proxy/usage/aggregate", alice, snap, 200)
	s.do("POST", "/proxy/usage/aggregate", alice, snap, 200) // upsert
	s.do("POST", "/proxy/usage/aggregate", admin, map[string]string{"periodStart": day(-6), "periodEnd": day(0), "userId": "bob"}, 200)
	s.do("POST", "/proxy/usage/aggregate", alice, map[string]string{"periodStart": day(-6), "periodEnd": day(0), "userId": "bob"}, 403)
	s.do("POST", "/proxy/usage/aggregate", admin, map[string]string{"periodStart": day(-6), "periodEnd": day(0), "userId": "nobody"}, 404)
	s.do("POST", "/proxy/usage/aggregate", admin, map[string]string{"periodStart": day(-6), "periodEnd": day(0), "userId": "a\u0007b"}, 400, breaks("request body"))
	s.do("POST", "/proxy/usage/aggregate", alice, map[string]string{"periodStart": "last week", "periodEnd": day(0)}, 400, breaks("request body"))
	s.do("POST", "/proxy/usage/aggregate", alice, map[string]string{"periodStart": day(-6), "periodEnd": day(0), "UserId": "bob"}, 400, breaks("request body"))
	s.do("POST", "/proxy/usage/aggregate", alice, `{"periodStart": "`+strings.Repeat("9", 70<<10)+`"}`, 413, breaks("request body"))

	// Accounts and bills: alice premium from five days ago, carol
	// enterprise without a contract, dave premium then enterprise on a
	// contract in another currency.
	s.do("PUT", "/admin/users/alice", admin, map[string]any{"tier": "premium", "effectiveFrom": day(-5)}, 200)
	s.do("PUT", "/admin/users/carol", admin, map[string]any{"tier": "enterprise"}, 200)
	s.do("PUT", "/admin/users/dave", admin, map[string]any{"tier": "premium", "effectiveFrom": day(-20)}, 200)
	s.do("PUT", "/admin/users/dave", admin, map[string]any{"tier": "enterprise", "effectiveFrom": day(-2),
		"contract": map[string]string{"baseMonthly": "500.00", "perGB": "0.005", "currency": "EUR"}}, 200)
	s.do("PUT", "/admin/users/erin", admin, map[string]any{"contract": map[string]string{"baseMonthly": "100", "perGB": "0.01"}}, 200)
	s.do("PUT", "/admin/users/erin", admin, map[string]any{"contract": nil}, 200)
	s.do("PUT", "/admin/users/alice", alice, map[string]any{"tier": "enterprise"}, 403)
	s.do("PUT", "/admin/users/alice", admin, map[string]any{"tier": "gold"}, 400, breaks("request body"))
	s.do("PUT", "/admin/users/alice", admin, map[string]any{"effectiveFrom": day(0)}, 400)
	s.do("PUT", "/admin/users/erin", admin, map[string]any{"contract": map[string]string{"baseMonthly": "100", "perGB": "0.0000001"}}, 400, breaks("request body"))
	s.do("PUT", "/admin/users/erin", admin, map[string]any{"contract": map[string]string{"baseMonthly": "100", "perGB": "0.01", "PerGB": "5"}}, 400, breaks("request body"))
	s.do("PUT", "/admin/users/alice", admin, `{"tier": "premium", "x": "`+strings.Repeat("y", 70<<10)+`"}`, 413, breaks("request body"))
	s.do("GET", "/admin/users/alice", admin, nil, 200)
	s.do("GET", "/admin/users/dave", admin, nil, 200)
	s.do("GET", "/admin/users/nobody", admin, nil, 404)
	s.do("GET", "/admin/users/a%00b", admin, nil, 400, breaks("Path parameter 'userId'"))
	s.do("GET", "/admin/users/alice", alice, nil, 403)

	bill := "?periodStart=" + day(-9) + "&periodEnd=" + day(0)
	s.do("GET", "/proxy/usage/billing"+bill, alice, nil, 200)
	s.do("GET", "/proxy/usage/billing"+bill, alice, nil, 200, withHeader("Accept", "text/csv"))
	s.do("GET", "/proxy/usage/billing"+bill+"&format=csv", alice, nil, 200)
	s.do("GET", "/proxy/usage/billing"+bill+"&userId=carol", admin, nil, 200)
	s.do("GET", "/proxy/usage/billing"+bill+"&userId=carol&format=csv", admin, nil, 200)
	s.do("GET", "/proxy/usage/billing"+bill+"&userId=bob", alice, nil, 403)
	s.do("GET", "/proxy/usage/billing"+bill+"&userId=dave", admin, nil, 409)
	s.do("GET", "/proxy/usage/billing?periodStart="+day(0)+"&periodEnd="+day(-9), alice, nil, 400)

	// Limits, access and webhooks.
	s.do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "0.000001", "enforcement": "hard", "alertPercents": []int{50, 100}}}, 200)
	s.do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "-1"}}, 400, breaks("request body"))
	s.do("GET", "/proxy/usage/limits", alice, nil, 200)
	s.do("GET", "/proxy/usage/limits", bob, nil, 200)
	s.do("GET", "/proxy/usage/limits?userId=alice", admin, nil, 200)
	s.do("GET", "/proxy/usage/limits?userId=alice", bob, nil, 403)
	s.do("GET", "/proxy/usage/limits?userId=nobody", admin, nil, 404)
	s.do("GET", "/proxy/usage/limits?userId=a%00b", admin, nil, 400, breaks("Query parameter 'userId'"))
	s.do("GET", "/proxy/usage/access/a1", svc, nil, 200)
	s.do("GET", "/proxy/usage/access/a3", alice, nil, 200)
	s.do("GET", "/proxy/usage/access/b1", alice, nil, 404)
	s.do("GET", "/proxy/usage/webhook", alice, nil, 404)
	s.do("PUT", "/proxy/usage/webhook", alice, map[string]string{"url": "https://93.184.216.34/hooks"}, 200)
	s.do("PUT", "/proxy/usage/webhook", alice, map[string]string{"url": "http://127.0.0.1/hooks"}, 400)
	s.do("PUT", "/proxy/usage/webhook", alice, map[string]string{"url": "http://example.com/" + strings.Repeat("y", 20<<10)}, 413, breaks("request body"))
	s.do("GET", "/proxy/usage/webhook", alice, nil, 200)
	s.do("GET", "/proxy/usage/webhook/deliveries", alice, nil, 200)
	s.do("GET", "/proxy/usage/webhook/deliveries?limit=5&userId=alice", admin, nil, 200)
	s.do("GET", "/proxy/usage/webhook/deliveries?limit=0", alice, nil, 400, breaks("limit"))
	s.do("GET", "/proxy/usage/webhook/deliveries?userId=alice", bob, nil, 403)
	s.do("DELETE", "/proxy/usage/webhook", alice, nil, 204)

	// Every authenticated operation refuses a missing token (which the
	// document's security requirement refuses too) and a bad one.
	fill := strings.NewReplacer("{proxyId}", "a1", "{date}", day(0), "{userId}", "alice")
	_, responses := s.c.documented()
	for _, resp := range responses {
		op, ok := strings.CutSuffix(resp, " 401")
		if !ok {
			continue
		}
		method, tpl, _ := strings.Cut(op, " ")
		s.do(method, fill.Replace(tpl), "", nil, 401, breaks("Authorization header"))
	}
}

// TestOpenAPILimitResponses produces every documented 429 (a caller at its
// in-flight limit) and 408 (a body that does not arrive in time) from the
// running service and checks them against api/openapi.yaml.
func TestOpenAPILimitResponses(t *testing.T) {
	// One service where a caller may have one request in flight, one where
	// bodies have 300 ms to arrive (the held request of the first must
	// outlast its checks).
	env := apptest.Start(t, database.Postgres, func(m *app.Main) { m.Config.MaxInflightPerUser = 1 })
	slow := apptest.Start(t, database.Postgres, func(m *app.Main) { m.Config.BodyTimeout = 300 * time.Millisecond })
	c := newContract(t)
	env.Client.Transport = c
	s := &session{t: t, env: env, c: c, router: env.Main.Server.Router()}
	alice, admin := apptest.Token(t, "alice"), apptest.Token(t, "root", "admin")
	s.do("PUT", "/proxies/a1", alice, nil, 201)
	slow.MustRegister(alice, "a1")

	today := time.Now().UTC().Format("2006-01-02")
	period := "periodStart=" + today + "&periodEnd=" + today
	requests := map[string]struct {
		path string
		body any
	}{
		"GET /proxies":                              {"/proxies", nil},
		"PUT /proxies/{proxyId}":                    {"/proxies/a1", map[string]string{"name": "x"}},
		"DELETE /proxies/{proxyId}":                 {"/proxies/a1", nil},
		"POST /proxy/usage/{proxyId}/record":        {"/proxy/usage/a1/record", map[string]string{"eventType": "error"}},
		"POST /proxy/usage/events":                  {"/proxy/usage/events", map[string]any{"events": []map[string]string{{"proxyId": "a1", "eventType": "error"}}}},
		"GET /proxy/usage/{proxyId}/metrics/{date}": {"/proxy/usage/a1/metrics/" + today, nil},
		"GET /proxy/usage/{proxyId}/metrics":        {"/proxy/usage/a1/metrics?startDate=" + today + "&endDate=" + today, nil},
		"GET /proxy/usage/{proxyId}/summary":        {"/proxy/usage/a1/summary", nil},
		"GET /proxy/usage/report":                   {"/proxy/usage/report?startDate=" + today + "&endDate=" + today, nil},
		"GET /proxy/usage/aggregation":              {"/proxy/usage/aggregation?" + period, nil},
		"POST /proxy/usage/aggregate":               {"/proxy/usage/aggregate", map[string]string{"periodStart": today, "periodEnd": today}},
		"GET /proxy/usage/billing":                  {"/proxy/usage/billing?" + period, nil},
		"PUT /admin/users/{userId}":                 {"/admin/users/alice", map[string]string{"tier": "premium"}},
		"GET /admin/users/{userId}":                 {"/admin/users/alice", nil},
		"GET /proxy/usage/limits":                   {"/proxy/usage/limits", nil},
		"GET /proxy/usage/access/{proxyId}":         {"/proxy/usage/access/a1", nil},
		"PUT /proxy/usage/webhook":                  {"/proxy/usage/webhook", map[string]string{"url": "https://93.184.216.34/hooks"}},
		"GET /proxy/usage/webhook":                  {"/proxy/usage/webhook", nil},
		"DELETE /proxy/usage/webhook":               {"/proxy/usage/webhook", nil},
		"GET /proxy/usage/webhook/deliveries":       {"/proxy/usage/webhook/deliveries", nil},
	}

	// Alice holds her only slot with an upload still arriving.
	held := dial(t, env)
	held.startBody("POST", "/proxy/usage/events", alice, 1000)

	_, responses := c.documented()
	var produced []string
	for _, resp := range responses {
		op, status, _ := strings.Cut(resp[strings.IndexByte(resp, ' ')+1:], " ")
		op = resp[:strings.IndexByte(resp, ' ')] + " " + op
		method, _, _ := strings.Cut(op, " ")
		rq, ok := requests[op]
		switch {
		case status != "429" && status != "408":
			continue
		case !ok:
			t.Errorf("no request for %s", op)
			continue
		case status == "429":
			r := s.do(method, rq.path, alice, rq.body, 429)
			if r.Header.Get("Retry-After") == "" {
				t.Errorf("%s 429 without Retry-After", op)
			}
		case status == "408":
			// A body that stops arriving.
			tok := alice
			if strings.HasPrefix(op, "PUT /admin/") {
				tok = admin
			}
			raw := dial(t, slow)
			raw.head(method, rq.path, tok, 100, false)
			raw.write(`{"`)
			httpResp, body, err := raw.response(30 * time.Second)
			if err != nil {
				t.Fatalf("%s: %v", op, err)
			}
			httpResp.Body = io.NopCloser(bytes.NewReader(body))
			if httpResp.Close { // ReadResponse moves "Connection: close" here
				httpResp.Header.Set("Connection", "close")
			}
			req, _ := http.NewRequest(method, slow.URL+rq.path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			if _, errs := c.v.ValidateHttpResponse(req, httpResp); len(errs) > 0 {
				t.Errorf("%s → %d: response does not match openapi.yaml:%s\n%s", op, httpResp.StatusCode, describe(errs), body)
			}
			if httpResp.StatusCode != 408 {
				t.Errorf("%s with a stalled body: %d %s", op, httpResp.StatusCode, body)
			}
		}
		produced = append(produced, resp)
	}
	// Every authenticated operation documents 429, every one with a body
	// 408 too.
	want := 0
	for p := c.model.Paths.PathItems.First(); p != nil; p = p.Next() {
		for o := p.Value().GetOperations().First(); o != nil; o = o.Next() {
			if o.Value().Responses.Codes.GetOrZero("401") == nil {
				continue
			}
			want++
			if o.Value().RequestBody != nil {
				want++
			}
		}
	}
	if len(produced) != want || want < 20 {
		t.Errorf("produced %d limit responses, want %d (429 on every authenticated operation, 408 on those with a body): %v", len(produced), want, produced)
	}
}
