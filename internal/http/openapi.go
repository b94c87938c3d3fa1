package http

import (
	"net/http"

	"github.com/gorilla/mux"

	"proxyusage/api"
)

// handleOpenAPI serves the embedded OpenAPI document. No authentication:
// the contract is public.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(api.OpenAPI)
}

// Router exposes the route table (the contract test walks it to compare
// with the OpenAPI document).
func (s *Server) Router() *mux.Router { return s.router }
