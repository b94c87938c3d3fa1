package http_test

import (
	"testing"

	"proxyusage/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
