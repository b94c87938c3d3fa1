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
