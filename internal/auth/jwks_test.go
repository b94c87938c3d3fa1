package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves a JWK Set that tests can rotate.
type jwksServer struct {
	mu   sync.Mutex
	keys map[string]jwkset.JWKMarshal
	hits int
	*httptest.Server
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{keys: map[string]jwkset.JWKMarshal{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.hits++
		set := jwkset.JWKSMarshal{}
		for _, k := range s.keys {
			set.Keys = append(set.Keys, k)
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) add(t *testing.T, kid string, alg jwkset.ALG, pub crypto.PublicKey) {
	t.Helper()
	jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.keys[kid] = jwk.Marshal()
	s.mu.Unlock()
}

func (s *jwksServer) remove(kid string) {
	s.mu.Lock()
	delete(s.keys, kid)
	s.mu.Unlock()
}

func signed(t *testing.T, m jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signedPayload signs payload byte for byte (MapClaims cannot repeat a
// name, and sorts its keys).
func signedPayload(t *testing.T, m jwt.SigningMethod, kid string, key any, payload string) string {
	t.Helper()
	head, _ := json.Marshal(map[string]string{"alg": m.Alg(), "kid": kid, "typ": "JWT"})
	signing := base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	sig, err := m.Sign(signing, key)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestJWKS(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rotated, _ := rsa.GenerateKey(rand.Reader, 2048)

	srv := newJWKSServer(t)
	srv.add(t, "rsa-1", jwkset.AlgRS256, &rsaKey.PublicKey)
	srv.add(t, "ec-1", jwkset.AlgES256, &ecKey.PublicKey)
	srv.add(t, "ed-1", jwkset.AlgEdDSA, edPub)

	v, err := NewVerifier(t.Context(), Config{JWKSURL: srv.URL, Secret: secret, Audience: "proxyusage", JWKSRefresh: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	claims := func(sub string) jwt.MapClaims {
		return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "aud": []string{"proxyusage"}, "roles": []string{"service"}}
	}
	accept := func(name, tok, sub string) {
		t.Helper()
		p, err := v.Verify(t.Context(), "Bearer "+tok)
		if err != nil || p.UserID != sub {
			t.Fatalf("%s refused: %v", name, err)
		}
	}
	refuse := func(name, tok string) {
		t.Helper()
		if p, err := v.Verify(t.Context(), "Bearer "+tok); err == nil {
			t.Fatalf("%s accepted as %+v", name, p)
		}
	}
	accept("RS256", signed(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("a")), "a")
	accept("ES256", signed(t, jwt.SigningMethodES256, "ec-1", ecKey, claims("b")), "b")
	accept("EdDSA", signed(t, jwt.SigningMethodEdDSA, "ed-1", edKey, claims("c")), "c")
	accept("HS256 with the configured secret", signed(t, jwt.SigningMethodHS256, "", secret, claims("d")), "d")

	// Claim names match exactly with JWKS keys too: SUB, Roles and EXP are
	// other claims, wherever they stand.
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	lookalike := fmt.Sprintf(`{"sub":"a","aud":"proxyusage","exp":%d,"SUB":"bob","Roles":["admin"]}`, future)
	if p, err := v.Verify(t.Context(), "Bearer "+signedPayload(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, lookalike)); err != nil || p.UserID != "a" || p.IsAdmin() {
		t.Fatalf("look-alike claims read as %+v (%v)", p, err)
	}
	lateEXP := fmt.Sprintf(`{"sub":"x","aud":"proxyusage","exp":%d,"EXP":%d}`, past, future)
	refuse("expired with a later EXP", signedPayload(t, jwt.SigningMethodES256, "ec-1", ecKey, lateEXP))
	twice := fmt.Sprintf(`{"sub":"x","aud":"proxyusage","exp":%d,"sub":"y"}`, future)
	refuse("sub twice", signedPayload(t, jwt.SigningMethodEdDSA, "ed-1", edKey, twice))
	refuse("sub with NUL", signed(t, jwt.SigningMethodEdDSA, "ed-1", edKey, claims("a\x00b")))

	// HS/RS confusion: an HMAC keyed with the RSA public key is refused.
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	refuse("HS256 over the public key PEM", signed(t, jwt.SigningMethodHS256, "rsa-1", pubPEM, claims("x")))
	refuse("HS256 over the public key DER", signed(t, jwt.SigningMethodHS256, "rsa-1", der, claims("x")))
	// A key used with another algorithm than its JWK declares.
	refuse("PS256 with an RS256 key", signed(t, jwt.SigningMethodPS256, "rsa-1", rsaKey, claims("x")))
	refuse("RS384", signed(t, jwt.SigningMethodRS384, "rsa-1", rsaKey, claims("x")))
	refuse("ES256 token naming the RSA key", signed(t, jwt.SigningMethodES256, "rsa-1", ecKey, claims("x")))
	refuse("signed by a key not in the set", signed(t, jwt.SigningMethodRS256, "rsa-1", rotated, claims("x")))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims("x")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	refuse("alg none", none)
	expired := claims("x")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	refuse("expired", signed(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, expired))
	wrongAud := claims("x")
	wrongAud["aud"] = "other"
	refuse("wrong audience", signed(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, wrongAud))

	// Rotation: a new kid is picked up as soon as a token names it.
	newTok := signed(t, jwt.SigningMethodRS256, "rsa-2", rotated, claims("rotated"))
	srv.add(t, "rsa-2", jwkset.AlgRS256, &rotated.PublicKey)
	accept("token with the rotated-in key", newTok, "rotated")
	// A retired key stops working after the next refresh.
	srv.remove("rsa-1")
	old := signed(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("a"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := v.Verify(t.Context(), "Bearer "+old); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("retired key still accepted after refreshes")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestJWKSOnlyRefusesHS256(t *testing.T) {
	srv := newJWKSServer(t)
	v, err := NewVerifier(t.Context(), Config{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	tok := signed(t, jwt.SigningMethodHS256, "", []byte("whatever-secret-0123456789abcdefgh"), jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
	if _, err := v.Verify(t.Context(), "Bearer "+tok); err == nil {
		t.Fatal("HS256 accepted with no secret configured")
	}
}
