package http_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// With only JWT_JWKS_URL configured, identity-provider tokens work end to
// end and HS256 tokens (even with the test secret) are refused.
func TestJWKSEndToEnd(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	jwk, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "idp-1", ALG: jwkset.AlgRS256}})
	if err != nil {
		t.Fatal(err)
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	}))
	defer idp.Close()
	env := apptest.Start(t, database.Postgres, func(m *app.Main) {
		m.Config.JWTSecret = ""
		m.Config.JWTJWKSURL = idp.URL
		m.Config.JWTIssuer = "https://idp.test"
	})
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "erin", "iss": "https://idp.test", "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = "idp-1"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	if r := env.Do("PUT", "/proxies/e1", s, nil); r.Status != 201 {
		t.Fatalf("RS256 token: %d %s", r.Status, r.Body)
	}
	env.Do("GET", "/proxies", apptest.Token(t, "erin"), nil).ExpectError(t, 401, "PROXY_USAGE_004")
}
