package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("fuzz-secret-0123456789abcdef012345")

func FuzzVerify(f *testing.F) {
	v, err := NewVerifier(f.Context(), Config{Secret: secret, Issuer: "iss", Audience: "aud"})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := Mint(secret, "alice", []string{"admin"}, time.Hour, "iss", "aud")
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "iss": "iss", "aud": "aud"}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	for _, s := range []string{"Bearer " + good, "Bearer " + none, "Bearer ", "", "Basic x", "Bearer a.b.c", "Bearer " + strings.Repeat("A", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		p, err := v.Verify(t.Context(), header)
		if err != nil {
			if strings.Contains(err.Error(), strings.TrimPrefix(header, "Bearer ")) && len(header) > 20 {
				t.Fatalf("error echoes the token: %v", err)
			}
			return
		}
		// Only a token we signed can pass, and it carries our claims.
		if p.UserID != "alice" || len(p.Roles) != 1 || p.Roles[0] != "admin" {
			t.Fatalf("accepted a forged token: %+v from %q", p, header)
		}
	})
}

func TestVerifierRejectsWrongAlgorithmFamily(t *testing.T) {
	v, _ := NewVerifier(t.Context(), Config{Secret: secret})
	claims := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		tok, _ := jwt.NewWithClaims(m, claims).SignedString(secret)
		if _, err := v.Verify(t.Context(), "Bearer "+tok); err == nil {
			t.Errorf("%s accepted with alg pinned to HS256", m.Alg())
		}
	}
	if _, err := NewVerifier(t.Context(), Config{}); err == nil {
		t.Error("verifier without a key")
	}
}

// A verified token is remembered until the earlier of cacheTTL and its
// expiry; a stale entry is verified again; the cache stays bounded.
func TestVerifierCache(t *testing.T) {
	v, _ := NewVerifier(t.Context(), Config{Secret: secret})
	tok, _ := Mint(secret, "alice", []string{"admin"}, 20*time.Second, "", "")
	p, err := v.Verify(t.Context(), "Bearer "+tok)
	if err != nil || p.UserID != "alice" {
		t.Fatalf("verify: %+v %v", p, err)
	}
	e, ok := v.cache.entries[tok]
	if !ok {
		t.Fatal("verified token not cached")
	}
	if left := time.Until(e.until); left > 20*time.Second || left < 15*time.Second {
		t.Fatalf("cached for %v, want until the token's expiry (20s)", left)
	}
	long, _ := Mint(secret, "bob", nil, time.Hour, "", "")
	if _, err := v.Verify(t.Context(), "Bearer "+long); err != nil {
		t.Fatal(err)
	}
	if left := time.Until(v.cache.entries[long].until); left > cacheTTL {
		t.Fatalf("cached for %v, longer than %v", left, cacheTTL)
	}

	// The cache answers while fresh, and only then.
	v.cache.entries[tok] = cachedToken{principal: Principal{UserID: "from-cache"}, until: time.Now().Add(time.Minute)}
	if p, _ := v.Verify(t.Context(), "Bearer "+tok); p.UserID != "from-cache" {
		t.Fatalf("fresh entry not used: %+v", p)
	}
	v.cache.entries[tok] = cachedToken{principal: Principal{UserID: "from-cache"}, until: time.Now().Add(-time.Second)}
	if p, _ := v.Verify(t.Context(), "Bearer "+tok); p.UserID != "alice" {
		t.Fatalf("stale entry used: %+v", p)
	}

	// A forged signature is a different string: never a cache hit.
	forged := tok[:len(tok)-4] + "AAAA"
	if _, err := v.Verify(t.Context(), "Bearer "+forged); err == nil {
		t.Fatal("forged token accepted")
	}

	now := time.Now()
	for i := range cacheEntries + 10 {
		v.cache.put(strings.Repeat("x", i%7)+time.Duration(i).String(), Principal{}, now.Add(time.Minute), now)
	}
	if n := len(v.cache.entries); n > cacheEntries {
		t.Fatalf("cache holds %d entries, bound %d", n, cacheEntries)
	}
}

func TestOwnershipRules(t *testing.T) {
	alice := Principal{UserID: "alice"}
	admin := Principal{UserID: "root", Roles: []string{RoleAdmin}}
	service := Principal{UserID: "fleet", Roles: []string{RoleService}}
	for _, c := range []struct {
		who         Principal
		owner       string
		read, write bool
	}{
		{alice, "alice", true, true}, {alice, "bob", false, false},
		{admin, "bob", true, true}, {service, "bob", false, true}, {service, "fleet", true, true},
	} {
		if got := c.who.CanRead(c.owner); got != c.read {
			t.Errorf("%s CanRead(%s) = %v", c.who.UserID, c.owner, got)
		}
		if got := c.who.CanWrite(c.owner); got != c.write {
			t.Errorf("%s CanWrite(%s) = %v", c.who.UserID, c.owner, got)
		}
	}
}
