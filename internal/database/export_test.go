package database

// NewProvider exposes the goose provider to migration tests.
var NewProvider = newProvider
