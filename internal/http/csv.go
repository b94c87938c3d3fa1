package http

import (
	"encoding/csv"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"proxyusage/internal/apperr"
	"proxyusage/internal/billing"
	"proxyusage/internal/usage"
)

// CSV export of the report, range-metrics and billing endpoints.
//
// A client asks for CSV with format=csv, or with an Accept header that
// prefers text/csv to application/json; format=json forces JSON. The body
// is streamed with encoding/csv (RFC 4180, CRLF line ends): a header row,
// then one row per entry. Cells hold exactly the JSON value of the same
// request: numbers spelled as encoding/json spells them, an empty cell for
// null; text that a spreadsheet would run as a formula is the one
// exception (textCell). Errors stay JSON error bodies.

const csvContentType = "text/csv; charset=utf-8"

// metricColumns are the daily metric fields (docs/metrics.md) in the order of usage.Metrics.
var metricColumns = []string{
	"connectionCount", "bytesSent", "bytesReceived", "totalBytes", "peakConcurrentConnections",
	"avgConnectionDurationSeconds", "errorCount", "successCount", "errorRate", "successRate",
	"avgLatencyMs", "p95LatencyMs", "maxLatencyMs", "eventCount",
}

// billColumns are the columns of a billing CSV; the last row is the total.
var billColumns = []string{"description", "quantity", "unit", "unitPrice", "amount", "currency"}

// negotiateCSV reports whether the response should be CSV: format=csv or
// format=json decide, otherwise the Accept header. Any other format value
// is invalid.
func negotiateCSV(w http.ResponseWriter, r *http.Request) (bool, error) {
	w.Header().Add("Vary", "Accept")
	q := r.URL.Query()
	if q.Has("format") {
		switch q.Get("format") {
		case "csv":
			return true, nil
		case "json":
			return false, nil
		default:
			return false, apperr.Errorf(apperr.Invalid, "format must be csv or json")
		}
	}
	return prefersCSV(r.Header.Values("Accept")), nil
}

// prefersCSV reports whether the Accept header values rank text/csv above
// application/json. Each type takes the quality of the most specific
// matching range (type/subtype over type/* over */*); a tie, or no Accept
// header, means JSON.
func prefersCSV(accept []string) bool {
	type rank struct {
		specificity int
		q           float64
	}
	var csvRank, jsonRank rank
	match := func(cur *rank, typ, sub, wantType, wantSub string, q float64) {
		spec := 0
		switch {
		case typ == wantType && sub == wantSub:
			spec = 3
		case typ == wantType && sub == "*":
			spec = 2
		case typ == "*" && sub == "*":
			spec = 1
		default:
			return
		}
		if spec > cur.specificity || (spec == cur.specificity && q > cur.q) {
			*cur = rank{spec, q}
		}
	}
	for _, header := range accept {
		for _, part := range strings.Split(header, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if part == "*" || strings.HasPrefix(part, "*;") {
				part = "*/*" + part[1:]
			}
			mt, params, err := mime.ParseMediaType(part)
			if err != nil {
				continue
			}
			typ, sub, ok := strings.Cut(mt, "/")
			if !ok {
				continue
			}
			q := 1.0
			if v, ok := params["q"]; ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f < 0 || f > 1 {
					continue
				}
				q = f
			}
			match(&csvRank, typ, sub, "text", "csv", q)
			match(&jsonRank, typ, sub, "application", "json", q)
		}
	}
	return csvRank.q > jsonRank.q
}

// csvOut streams CSV rows to a response.
type csvOut struct {
	r   *http.Request
	w   *csv.Writer
	row []string
}

// startCSV writes the headers and the header row of a CSV download.
func startCSV(w http.ResponseWriter, r *http.Request, filename string, header []string) *csvOut {
	h := w.Header()
	h.Set("Content-Type", csvContentType)
	// filename is built from fileToken parts: nothing to escape.
	h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	c := &csvOut{r: r, w: csv.NewWriter(w), row: make([]string, 0, len(header))}
	c.w.UseCRLF = true
	c.write(header)
	return c
}

func (c *csvOut) write(row []string) { _ = c.w.Write(row) } // the error sticks; finish reports it

// finish flushes the rows; a failure means the client went away.
func (c *csvOut) finish() {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		loggerFrom(c.r.Context()).Debug("csv download aborted", "error", err)
	}
}

// textCell guards a text cell against spreadsheet formula injection: text
// starting with =, +, -, @, tab or carriage return gets a leading ', so a
// spreadsheet shows it as text instead of evaluating it (a proxy id may
// start with "-"). Every text cell goes through here. Numeric cells do
// not: the service writes them itself (never negative), and they must
// stay numbers for the spreadsheet to add them up.
func textCell(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		return "'" + s
	}
	return s
}

// metricsRow writes first (a text cell: a date, proxyId or "total")
// followed by the metric cells.
func (c *csvOut) metricsRow(first string, m *usage.Metrics) {
	c.row = append(c.row[:0], textCell(first))
	c.row = appendMetricCells(c.row, m)
	c.write(c.row)
}

func appendMetricCells(row []string, m *usage.Metrics) []string {
	return append(row,
		strconv.FormatInt(m.ConnectionCount, 10),
		m.BytesSent.String(),
		m.BytesReceived.String(),
		m.TotalBytes.String(),
		strconv.Itoa(m.PeakConcurrentConnections),
		floatCell(m.AvgConnectionDurationSeconds),
		strconv.FormatInt(m.ErrorCount, 10),
		strconv.FormatInt(m.SuccessCount, 10),
		floatCell(m.ErrorRate),
		floatCell(m.SuccessRate),
		floatCell(m.AvgLatencyMs),
		floatCell(m.P95LatencyMs),
		floatCell(m.MaxLatencyMs),
		strconv.FormatInt(m.EventCount, 10),
	)
}

// floatCell spells v as encoding/json does; null is an empty cell.
func floatCell(v *float64) string {
	if v == nil {
		return ""
	}
	f := *v
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b := strconv.AppendFloat(make([]byte, 0, 24), f, format, -1, 64)
	if format == 'e' {
		// "1e-07" → "1e-7", like encoding/json.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return string(b)
}

// fileToken keeps a file name portable: anything but [A-Za-z0-9._-]
// becomes "_".
func fileToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}

// writeRangeCSV writes one row per day: date, then the metrics.
func writeRangeCSV(w http.ResponseWriter, r *http.Request, out *usage.Range) {
	name := "metrics-" + fileToken(out.ProxyID) + "-" + out.StartDate + "-" + out.EndDate + ".csv"
	c := startCSV(w, r, name, append([]string{"date"}, metricColumns...))
	for i := range out.Metrics {
		c.metricsRow(out.Metrics[i].Date, &out.Metrics[i].Metrics)
	}
	c.finish()
}

// writeReportCSV writes the rows (date or proxyId first, by groupBy), then
// a last row "total" with the totals.
func writeReportCSV(w http.ResponseWriter, r *http.Request, out *usage.Report) {
	key := "date"
	if out.GroupBy == "proxy" {
		key = "proxyId"
	}
	name := "report-" + out.GroupBy + "-" + out.StartDate + "-" + out.EndDate + ".csv"
	c := startCSV(w, r, name, append([]string{key}, metricColumns...))
	for i := range out.Rows {
		row := &out.Rows[i]
		first := row.Date
		if key == "proxyId" {
			first = row.ProxyID
		}
		c.metricsRow(first, &row.Metrics)
	}
	c.metricsRow("total", &out.Totals)
	c.finish()
}

// writeBillCSV writes one row per line item, then a last row "total"
// (amount empty when the bill has custom pricing and so no total).
func writeBillCSV(w http.ResponseWriter, r *http.Request, out *billing.Bill) {
	name := "bill-" + out.PeriodStart + "-" + out.PeriodEnd + ".csv"
	c := startCSV(w, r, name, billColumns)
	for _, li := range out.LineItems {
		c.write([]string{textCell(li.Description), li.Quantity, textCell(li.Unit), li.UnitPrice, li.Amount, textCell(out.Currency)})
	}
	total := ""
	if out.Total != nil {
		total = *out.Total
	}
	c.write([]string{"total", "", "", "", total, textCell(out.Currency)})
	c.finish()
}
