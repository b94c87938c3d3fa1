package database

// NewProvider exposes the goose provider to migration tests.
var NewProvider = newProvider

// Untraversable exposes the data directory reachability check.
var Untraversable = untraversable
