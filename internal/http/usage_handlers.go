package http

import (
	"net/http"

	"proxyusage/internal/apperr"
	"proxyusage/internal/usage"
)

func (s *Server) handleDailyMetrics(w http.ResponseWriter, r *http.Request) {
	out, err := s.usage.Daily(r.Context(), caller(r), pathVar(r, "proxyId"), pathVar(r, "date"))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRangeMetrics(w http.ResponseWriter, r *http.Request) {
	asCSV, err := negotiateCSV(w, r)
	if err != nil {
		Error(w, r, err)
		return
	}
	q := r.URL.Query()
	out, err := s.usage.Range(r.Context(), caller(r), pathVar(r, "proxyId"), q.Get("startDate"), q.Get("endDate"))
	if err != nil {
		Error(w, r, err)
		return
	}
	if asCSV {
		writeRangeCSV(w, r, &out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleSummary(w http.ResponseWriter, r *http.Request) {
	out, err := s.usage.Summary(r.Context(), caller(r), pathVar(r, "proxyId"))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	asCSV, err := negotiateCSV(w, r)
	if err != nil {
		Error(w, r, err)
		return
	}
	q := r.URL.Query()
	out, err := s.usage.Report(r.Context(), caller(r), q.Get("userId"), q.Get("startDate"), q.Get("endDate"), q.Get("groupBy"))
	if err != nil {
		Error(w, r, err)
		return
	}
	if asCSV {
		writeReportCSV(w, r, &out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAggregation(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch q.Get("groupBy") {
	case "":
	case "tier":
		if q.Get("userId") != "" {
			Error(w, r, apperr.Errorf(apperr.Invalid, "groupBy=tier covers all users; do not pass userId"))
			return
		}
		out, err := s.usage.TierAggregation(r.Context(), caller(r), q.Get("periodStart"), q.Get("periodEnd"))
		if err != nil {
			Error(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
		return
	default:
		Error(w, r, apperr.Errorf(apperr.Invalid, "groupBy must be tier or absent"))
		return
	}
	out, err := s.usage.Aggregation(r.Context(), caller(r), q.Get("userId"), q.Get("periodStart"), q.Get("periodEnd"))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	var req usage.SnapshotRequest
	if err := decodeBody(r, 64<<10, false, &req); err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.usage.Snapshot(r.Context(), caller(r), req.UserID, req.PeriodStart, req.PeriodEnd)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
