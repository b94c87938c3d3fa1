package http

import (
	"net/http"
	"strconv"

	"proxyusage/internal/alert"
	"proxyusage/internal/apperr"
)

func (s *Server) handleLimits(w http.ResponseWriter, r *http.Request) {
	out, err := s.limits.Status(r.Context(), caller(r), r.URL.Query().Get("userId"))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAccess(w http.ResponseWriter, r *http.Request) {
	out, err := s.limits.Access(r.Context(), caller(r), pathVar(r, "proxyId"))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handlePutWebhook(w http.ResponseWriter, r *http.Request) {
	var in alert.WebhookInput
	if err := decodeBody(r, alert.MaxWebhookBytes, false, &in); err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.webhooks.Set(r.Context(), caller(r), in)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetWebhook(w http.ResponseWriter, r *http.Request) {
	out, err := s.webhooks.Get(r.Context(), caller(r))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteWebhook(w http.ResponseWriter, r *http.Request) {
	if err := s.webhooks.Delete(r.Context(), caller(r)); err != nil {
		Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := alert.DeliveriesRequest{UserID: q.Get("userId"), Limit: alert.DefaultDeliveries}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			Error(w, r, apperr.Errorf(apperr.Invalid, "limit must be an integer from 1 to %d", alert.MaxDeliveries))
			return
		}
		req.Limit = n
	}
	list, err := s.webhooks.Deliveries(r.Context(), caller(r), req)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": list, "count": len(list)})
}
