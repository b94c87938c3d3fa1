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
	period, err := queryPeriod(q, "periodStart", "periodEnd")
	if err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.billing.Bill(r.Context(), caller(r), billing.BillRequest{UserID: q.Get("userId"), Period: period})
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
	var body accountBody
	if err := decodeBody(r, billing.MaxAccountBytes, false, &body); err != nil {
		Error(w, r, err)
		return
	}
	req, err := body.request(pathVar(r, "userId"))
	if err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.billing.UpdateAccount(r.Context(), caller(r), req)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
