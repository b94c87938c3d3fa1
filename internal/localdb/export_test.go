package localdb

// Untraversable exposes the data directory reachability check.
var Untraversable = untraversable
