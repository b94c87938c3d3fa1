// Package sql holds the ordered schema migrations, the single source of
// truth for the database schema. They are embedded into the binary and
// applied by `proxyusage migrate` and at `serve` start.
//
// Migrations that differ between backends branch on the session setting
// proxyusage.backend ("timescaledb" or "postgres"), which the migrator sets
// on its connection after detecting the backend.
package sql

import "embed"

// Migrations is the directory of goose migrations, applied in file order.
//
//go:embed *.sql
var Migrations embed.FS
