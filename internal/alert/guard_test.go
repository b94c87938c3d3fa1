package alert

import (
	"net/netip"
	"testing"
)

func TestPublic(t *testing.T) {
	for addr, want := range map[string]bool{
		"93.184.216.34": true, "8.8.8.8": true, "2606:4700:4700::1111": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.31.255.255": false, "192.168.1.1": false,
		"169.254.169.254": false, "0.0.0.0": false, "100.64.0.1": false, "255.255.255.255": false, "224.0.0.1": false,
		"::1": false, "::": false, "fe80::1": false, "fd12::1": false, "::ffff:10.0.0.1": false, "::ffff:127.0.0.1": false,
		"64:ff9b::a00:1": false, "2002:a00:1::": false, "ff02::1": false,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	d := &Deliverer{cfg: DelivererConfig{FirstRetry: 5e9, MaxBackoff: 3600e9}}
	for attempt, want := range map[int]float64{1: 5, 2: 10, 3: 20, 10: 2560, 11: 3600, 40: 3600} {
		if got := d.backoff(attempt).Seconds(); got != want {
			t.Errorf("backoff(%d) = %vs, want %vs", attempt, got, want)
		}
	}
}
