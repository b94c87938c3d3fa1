package http

import (
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
	"proxyusage/internal/ingest/wire"
	"proxyusage/internal/proxy"
	"proxyusage/internal/strictjson"
)

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if err := s.ready.check(r.Context()); err != nil {
		loggerFrom(r.Context()).Warn("not ready", "error", err)
		Error(w, r, apperr.Errorf(apperr.Unavailable, "not ready"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// readBody reads a JSON request body of at most limit bytes.
func readBody(r *http.Request, limit int64, allowEmpty bool) ([]byte, error) {
	if mt := mediaType(r); mt != "" && mt != "application/json" {
		return nil, apperr.Errorf(apperr.Invalid, "Content-Type must be application/json")
	}
	return readRaw(r, limit, allowEmpty)
}

// mediaType is the request's Content-Type without parameters ("" if none,
// "invalid" if unparsable).
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "invalid"
	}
	return mt
}

// decodeBody reads a JSON request body of at most limit bytes into req by
// the rules every body follows (strictjson: exact member names, no
// duplicate or unknown ones, no invalid UTF-8, NUL or trailing data) and
// validates it. Every handler that takes a JSON body other than events
// (which have their own decoder with the same rules) reads it here. An
// empty body is allowed only when allowEmpty; req is validated as it is.
func decodeBody(r *http.Request, limit int64, allowEmpty bool, req strictjson.Validator) error {
	body, err := readBody(r, limit, allowEmpty)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return req.Validate()
	}
	return strictjson.Decode(body, req)
}

// readRaw reads a request body of at most limit bytes (see readBodyBytes
// for how its memory is bounded).
func readRaw(r *http.Request, limit int64, allowEmpty bool) ([]byte, error) {
	body, err := readBodyBytes(r, limit)
	if err != nil {
		if apperr.CodeOf(err) != apperr.Internal || r.Context().Err() != nil {
			return nil, err // a limit, or the client went away (Error tells)
		}
		return nil, apperr.Errorf(apperr.Invalid, "could not read the request body")
	}
	if len(body) == 0 && !allowEmpty {
		return nil, apperr.Errorf(apperr.Invalid, "request body is required")
	}
	return body, nil
}

type proxyJSON struct {
	ProxyID    string     `json:"proxyId"`
	UserID     string     `json:"userId"`
	Name       string     `json:"name"`
	Archived   bool       `json:"archived"`
	ArchivedAt *time.Time `json:"archivedAt,omitempty"`
	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
}

func toProxyJSON(p proxy.Proxy) proxyJSON {
	return proxyJSON{ProxyID: p.ID, UserID: p.UserID, Name: p.Name, Archived: p.Archived(),
		ArchivedAt: p.ArchivedAt, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

func (s *Server) handleRegisterProxy(w http.ResponseWriter, r *http.Request) {
	var req proxy.Registration
	if err := decodeBody(r, proxy.MaxRegistrationBytes, true, &req); err != nil {
		Error(w, r, err)
		return
	}
	p, created, err := s.proxies.Register(r.Context(), caller(r), pathVar(r, "proxyId"), req)
	if err != nil {
		Error(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, toProxyJSON(p))
}

// proxyPage is the answer of GET /proxies.
type proxyPage struct {
	Proxies   []proxyJSON `json:"proxies"`
	Count     int         `json:"count"`     // of this page
	NextAfter *string     `json:"nextAfter"` // the cursor of the next page; null on the last
}

func (s *Server) handleListProxies(w http.ResponseWriter, r *http.Request) {
	req, err := pageRequest(r.URL.Query())
	if err != nil {
		Error(w, r, err)
		return
	}
	list, more, err := s.proxies.Page(r.Context(), caller(r).UserID, req)
	if err != nil {
		Error(w, r, err)
		return
	}
	out := proxyPage{Proxies: make([]proxyJSON, len(list)), Count: len(list)}
	for i, p := range list {
		out.Proxies[i] = toProxyJSON(p)
	}
	if more {
		out.NextAfter = &list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// pageRequest reads limit (digits only, default the largest page) and
// after from the query; each at most once.
func pageRequest(q url.Values) (proxy.PageRequest, error) {
	req := proxy.PageRequest{Limit: proxy.MaxPageSize}
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if len(v) != 1 || err != nil || strings.TrimLeft(v[0], "0123456789") != "" {
			return req, apperr.Errorf(apperr.Invalid, "limit must be an integer from 1 to %d", proxy.MaxPageSize)
		}
		req.Limit = n
	}
	if v, ok := q["after"]; ok {
		if len(v) != 1 || v[0] == "" {
			return req, apperr.Errorf(apperr.Invalid, "after must be a proxyId (the nextAfter of the previous page)")
		}
		req.After = v[0]
	}
	return req, req.Validate()
}

func (s *Server) handleArchiveProxy(w http.ResponseWriter, r *http.Request) {
	if err := s.proxies.Archive(r.Context(), caller(r), pathVar(r, "proxyId")); err != nil {
		Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRecordOne(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r, ingest.MaxEventBytes, false)
	if err != nil {
		Error(w, r, err)
		return
	}
	proxyID := pathVar(r, "proxyId")
	res, err := s.ingest.RecordOne(r.Context(), caller(r), proxyID, body)
	if err != nil {
		Error(w, r, err)
		return
	}
	status := http.StatusCreated
	if res.Duplicates > 0 {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{"proxyId": proxyID, "recorded": true, "duplicate": res.Duplicates > 0})
}

func (s *Server) handleRecordBatch(w http.ResponseWriter, r *http.Request) {
	mt := mediaType(r)
	switch mt {
	case "", "application/json", wire.CloudEventsType, wire.CloudEventsBatchType:
	default:
		Error(w, r, apperr.Errorf(apperr.Invalid, "Content-Type must be application/json, %s or %s",
			wire.CloudEventsType, wire.CloudEventsBatchType))
		return
	}
	body, err := readRaw(r, ingest.MaxBatchBytes, false)
	if err != nil {
		Error(w, r, err)
		return
	}
	var res ingest.Result
	switch mt {
	case wire.CloudEventsType, wire.CloudEventsBatchType:
		res, err = s.ingest.RecordCloudEvents(r.Context(), caller(r), body, mt == wire.CloudEventsBatchType)
	default:
		res, err = s.ingest.RecordBatch(r.Context(), caller(r), body)
	}
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]int{"accepted": res.Accepted, "duplicates": res.Duplicates})
}
