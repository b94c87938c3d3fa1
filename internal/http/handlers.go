package http

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
	"proxyusage/internal/proxy"
)

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Ready(r.Context()); err != nil {
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

func readRaw(r *http.Request, limit int64, allowEmpty bool) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, apperr.Errorf(apperr.TooLarge, "request body is larger than %d bytes", limit)
	}
	if err != nil {
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
	body, err := readBody(r, 64<<10, true)
	if err != nil {
		Error(w, r, err)
		return
	}
	var req struct {
		Name *string `json:"name"`
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			Error(w, r, apperr.Errorf(apperr.Invalid, `body must be {"name": "..."}`))
			return
		}
	}
	p, created, err := s.proxies.Register(r.Context(), caller(r), pathVar(r, "proxyId"), req.Name)
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

func (s *Server) handleListProxies(w http.ResponseWriter, r *http.Request) {
	list, err := s.proxies.List(r.Context(), caller(r).UserID)
	if err != nil {
		Error(w, r, err)
		return
	}
	out := make([]proxyJSON, len(list))
	for i, p := range list {
		out[i] = toProxyJSON(p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"proxies": out, "count": len(out)})
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
	release, err := s.reserveBody(r, ingest.MaxBatchBytes)
	if err != nil {
		Error(w, r, err)
		return
	}
	defer release()
	mt := mediaType(r)
	switch mt {
	case "", "application/json", ingest.CloudEventsType, ingest.CloudEventsBatchType:
	default:
		Error(w, r, apperr.Errorf(apperr.Invalid, "Content-Type must be application/json, %s or %s",
			ingest.CloudEventsType, ingest.CloudEventsBatchType))
		return
	}
	body, err := readRaw(r, ingest.MaxBatchBytes, false)
	if err != nil {
		Error(w, r, err)
		return
	}
	var res ingest.Result
	switch mt {
	case ingest.CloudEventsType, ingest.CloudEventsBatchType:
		res, err = s.ingest.RecordCloudEvents(r.Context(), caller(r), body, mt == ingest.CloudEventsBatchType)
	default:
		res, err = s.ingest.RecordBatch(r.Context(), caller(r), body)
	}
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]int{"accepted": res.Accepted, "duplicates": res.Duplicates})
}
