package http

import (
	"net/http"

	"proxyusage/internal/billing"
)

func (s *Server) handleBilling(w http.ResponseWriter, r *http.Request) {
	asCSV, err := negotiateCSV(w, r)
	if err != nil {
		Error(w, r, err)
		return
	}
	q := r.URL.Query()
	out, err := s.billing.Bill(r.Context(), caller(r), q.Get("userId"), q.Get("periodStart"), q.Get("periodEnd"))
	if err != nil {
		Error(w, r, err)
		return
	}
	if asCSV {
		writeBillCSV(w, r, &out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetAccount(w http.ResponseWriter, r *http.Request) {
	out, err := s.billing.GetAccount(r.Context(), caller(r), pathVar(r, "userId"))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handlePutAccount(w http.ResponseWriter, r *http.Request) {
	// Role first: a plain user learns nothing from body validation.
	if err := requireAdmin(r); err != nil {
		Error(w, r, err)
		return
	}
	var req billing.AccountUpdate
	if err := decodeBody(r, 64<<10, false, &req); err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.billing.UpdateAccount(r.Context(), caller(r), pathVar(r, "userId"), req)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
