package database_test

import (
	"testing"

	"proxyusage/internal/database"
)

func TestTimescaleVersionSupported(t *testing.T) {
	for v, want := range map[string]bool{
		"2.28.3": true, "2.18.0": true, "2.18.0-dev": true, "3.0.0": true, "2.100.1": true,
		"2.17.2": false, "2.9.3": false, "1.7.5": false, "": false, "garbage": false,
	} {
		if got := database.TimescaleVersionSupported(v); got != want {
			t.Errorf("TimescaleVersionSupported(%q) = %v, want %v", v, got, want)
		}
	}
}
