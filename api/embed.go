// Package api holds the OpenAPI 3.1 contract of the service. The document
// is embedded so the binary serves exactly the contract it was built and
// tested with (GET /openapi.yaml).
package api

import _ "embed"

// OpenAPI is the OpenAPI 3.1 document (api/openapi.yaml).
//
//go:embed openapi.yaml
var OpenAPI []byte
