package database

import "proxyusage/internal/localdb"

// LocalCluster and FreePort moved to internal/localdb (dev tooling is no
// part of the service's database layer). These names stay only until
// internal/pgtest and cmd/bench, reworked elsewhere, import localdb; then
// delete this file.
type LocalCluster = localdb.Cluster

// FreePort: see LocalCluster.
var FreePort = localdb.FreePort
