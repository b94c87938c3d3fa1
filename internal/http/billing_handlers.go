package http

import (
	"bytes"
	"encoding/json"
	"net/http"

	"proxyusage/internal/apperr"
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
	body, err := readBody(r, 64<<10, false)
	if err != nil {
		Error(w, r, err)
		return
	}
	// contract is a json.RawMessage here so that "contract": null (remove
	// the contract) stays distinguishable from an absent contract.
	var wire struct {
		Tier          string          `json:"tier"`
		EffectiveFrom string          `json:"effectiveFrom"`
		Contract      json.RawMessage `json:"contract"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wire); err != nil {
		Error(w, r, apperr.Errorf(apperr.Invalid, `body must be {"tier": "premium", "effectiveFrom": "YYYY-MM-DD", "contract": {...}}`))
		return
	}
	req := billing.AccountUpdate{Tier: wire.Tier, EffectiveFrom: wire.EffectiveFrom}
	if wire.Contract != nil {
		req.Contract = &wire.Contract
	}
	out, err := s.billing.UpdateAccount(r.Context(), caller(r), pathVar(r, "userId"), req)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
