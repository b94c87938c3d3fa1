package alert

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"proxyusage/internal/apperr"
)

// ErrPrivateAddress is why a delivery was refused: the webhook's host
// resolved to an address the service must not call (SSRF).
var ErrPrivateAddress = errors.New("webhook address is private, loopback or link-local")

// nonPublic are special-purpose ranges that netip's predicates do not
// cover but that must not be reachable through a webhook either.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: may embed a private IPv4
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2002::/16"),       // 6to4: may embed a private IPv4
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
}

// Public reports whether a webhook may be delivered to addr: not private,
// loopback, link-local, multicast, unspecified or otherwise special.
func Public(addr netip.Addr) bool {
	addr = addr.Unmap()
	if !addr.IsValid() || addr.IsPrivate() || addr.IsLoopback() || addr.IsLinkLocalUnicast() ||
		addr.IsLinkLocalMulticast() || addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// MaxURLLength bounds a webhook URL.
const MaxURLLength = 2048

// Guard checks webhook URLs when they are configured and addresses when
// they are dialled.
type Guard struct {
	// AllowPrivate lets webhooks reach private, loopback and link-local
	// addresses: for tests and development only (WEBHOOK_ALLOW_PRIVATE).
	AllowPrivate bool
	Resolver     *net.Resolver // default net.DefaultResolver
}

// CheckURL validates a webhook URL as configured: http or https, a host,
// no credentials or fragment, and (unless AllowPrivate) a host that is or
// resolves only to public addresses.
func (g Guard) CheckURL(ctx context.Context, raw string) (*url.URL, error) {
	bad := func(why string) error {
		return apperr.Errorf(apperr.Invalid, "url %s", why)
	}
	if raw == "" || len(raw) > MaxURLLength {
		return nil, bad(fmt.Sprintf("must be an http or https URL of at most %d characters", MaxURLLength))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, bad("must be an absolute http or https URL, e.g. https://hooks.example.com/usage")
	}
	if u.User != nil {
		return nil, bad("must not carry credentials (user:password@)")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, bad("must not have a fragment")
	}
	for _, c := range raw {
		if c <= ' ' || c == 0x7f {
			return nil, bad("must not contain spaces or control characters")
		}
	}
	if port := u.Port(); port != "" {
		if p, err := netip.ParseAddrPort("0.0.0.0:" + port); err != nil || p.Port() == 0 {
			return nil, bad("has an invalid port")
		}
	}
	if g.AllowPrivate {
		return u, nil
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if !Public(addr) {
			return nil, bad("points to a private, loopback or link-local address")
		}
		return u, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := g.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return nil, bad("host does not resolve")
	}
	for _, a := range addrs {
		if !Public(a) {
			return nil, bad("host resolves to a private, loopback or link-local address")
		}
	}
	return u, nil
}

func (g Guard) resolver() *net.Resolver {
	if g.Resolver != nil {
		return g.Resolver
	}
	return net.DefaultResolver
}

// control is a net.Dialer Control: it runs after DNS resolution, on the
// very address about to be connected, so a name that resolved to a
// public address when configured but to a private one now (DNS
// rebinding) is refused.
func (g Guard) control(network, address string, _ syscall.RawConn) error {
	if g.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !Public(ap.Addr()) {
		return ErrPrivateAddress
	}
	return nil
}
