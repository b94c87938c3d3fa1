package http

import (
	"net/http"

	"proxyusage/internal/usage"
)

func (s *Server) handleDailyMetrics(w http.ResponseWriter, r *http.Request) {
	day, err := parseDate("date", pathVar(r, "date"))
	if err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.usage.Daily(r.Context(), caller(r), usage.DailyRequest{ProxyID: pathVar(r, "proxyId"), Date: day})
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
	period, err := queryPeriod(r.URL.Query(), "startDate", "endDate")
	if err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.usage.Range(r.Context(), caller(r), usage.RangeRequest{ProxyID: pathVar(r, "proxyId"), Period: period})
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
	period, err := queryPeriod(q, "startDate", "endDate")
	if err != nil {
		Error(w, r, err)
		return
	}
	req := usage.ReportRequest{UserID: q.Get("userId"), Period: period, GroupBy: usage.GroupBy(q.Get("groupBy"))}
	out, err := s.usage.Report(r.Context(), caller(r), req)
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
	period, err := queryPeriod(q, "periodStart", "periodEnd")
	if err != nil {
		Error(w, r, err)
		return
	}
	req := usage.AggregationRequest{UserID: q.Get("userId"), Period: period, GroupBy: usage.GroupBy(q.Get("groupBy"))}
	var out any
	if req.GroupBy == usage.GroupByTier {
		out, err = s.usage.TierAggregation(r.Context(), caller(r), req)
	} else {
		out, err = s.usage.Aggregation(r.Context(), caller(r), req)
	}
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	var body snapshotBody
	if err := decodeBody(r, usage.MaxSnapshotBytes, false, &body); err != nil {
		Error(w, r, err)
		return
	}
	req, err := body.request()
	if err != nil {
		Error(w, r, err)
		return
	}
	out, err := s.usage.Snapshot(r.Context(), caller(r), req)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
