// Package auth verifies the JWT bearer tokens that authenticate every API
// call and carries the caller (Principal) through the request context.
package auth

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"proxyusage/internal/apperr"
	"proxyusage/internal/user"
)

// Roles a token may carry in its "roles" claim.
const (
	RoleService = "service" // records events for any registered proxy
	RoleAdmin   = "admin"   // everything, plus user/tier management
)

// Principal is the authenticated caller.
type Principal struct {
	UserID string
	Roles  []string
}

// IsAdmin reports whether the caller has the admin role.
func (p Principal) IsAdmin() bool { return slices.Contains(p.Roles, RoleAdmin) }

// Subject resolves whose data a request is about: the caller's own when
// userID is empty or the caller's, another user's only for admins. A
// userID that breaks the user id rule is 400 whoever asks.
func (p Principal) Subject(userID string) (string, error) {
	if userID == "" || userID == p.UserID {
		return p.UserID, nil
	}
	if err := user.ValidateID(userID); err != nil {
		return "", err
	}
	if !p.IsAdmin() {
		return "", apperr.Errorf(apperr.Forbidden, "only admins may act on another user's data")
	}
	return userID, nil
}

// CanWriteAny reports whether the caller may record events for any
// registered proxy, not only its own.
func (p Principal) CanWriteAny() bool {
	return p.IsAdmin() || slices.Contains(p.Roles, RoleService)
}

// CanRead reports whether the caller may read what owner owns (a proxy
// and its usage): its own, or anything for admins.
func (p Principal) CanRead(owner string) bool { return owner == p.UserID || p.IsAdmin() }

// CanWrite reports whether the caller may act as the edge for what owner
// owns (record a proxy's events, ask whether it may open a connection):
// its own, or anything for the service role and admins.
func (p Principal) CanWrite(owner string) bool { return owner == p.UserID || p.CanWriteAny() }

// Config configures a Verifier. At least one of Secret and JWKSURL is
// required.
type Config struct {
	Secret   []byte // HS256 key (JWT_SECRET)
	JWKSURL  string // JWK Set of an identity provider (JWT_JWKS_URL): RS256, ES256, EdDSA
	Issuer   string // checked when set
	Audience string // checked when set

	// JWKSRefresh is how often the key set is re-fetched (default 1h); an
	// unknown kid also triggers a (rate-limited) refresh, so rotated keys
	// are picked up at once.
	JWKSRefresh time.Duration
	Logger      *slog.Logger
}

// asymmetric are the algorithms accepted with JWKS keys.
var asymmetric = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()}

// Verifier checks bearer tokens. Each key source has its own parser with
// its algorithms pinned: HS256 tokens are only ever checked with the
// secret and asymmetric ones only with JWKS keys, so "none" and HS/RS
// confusion (an HMAC over a public key) are refused.
type Verifier struct {
	hmac   *jwt.Parser
	secret []byte
	jwks   *jwt.Parser
	keys   keyfunc.Keyfunc

	cache tokenCache
}

// tokenCache remembers tokens that verified, for a short while: a proxy
// sends the same token with every event, and checking its signature and
// decoding its claims each time was the largest share of the CPU spent on
// a single-event request. Only HS256 tokens are cached: the secret cannot
// change under a running process, while a key retired from the JWK Set
// must stop being honoured at the next refresh. Entries never outlive the
// token's expiry, nor cacheTTL.
type tokenCache struct {
	mu      sync.RWMutex
	entries map[string]cachedToken
}

type cachedToken struct {
	principal Principal
	until     time.Time
}

const (
	cacheTTL     = time.Minute
	cacheEntries = 10_000 // about 4 MB of tokens at most
)

func (c *tokenCache) get(raw string, now time.Time) (Principal, bool) {
	c.mu.RLock()
	e, ok := c.entries[raw]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return Principal{}, false
	}
	return e.principal, true
}

func (c *tokenCache) put(raw string, p Principal, until time.Time, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= cacheEntries {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= cacheEntries {
			clear(c.entries) // a flood of distinct valid tokens: start over
		}
	}
	if c.entries == nil {
		c.entries = make(map[string]cachedToken)
	}
	c.entries[raw] = cachedToken{principal: p, until: until}
}

// NewVerifier returns a Verifier for cfg. With a JWKS URL it fetches the
// key set in the background until ctx ends; an identity provider that is
// down at start only delays acceptance of its tokens.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("auth: a secret or a JWKS URL is required")
	}
	common := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(30 * time.Second)}
	if cfg.Issuer != "" {
		common = append(common, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		common = append(common, jwt.WithAudience(cfg.Audience))
	}
	v := &Verifier{}
	if len(cfg.Secret) > 0 {
		v.secret = cfg.Secret
		v.hmac = jwt.NewParser(append(common, jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}))...)
	}
	if cfg.JWKSURL != "" {
		log := cfg.Logger
		if log == nil {
			log = slog.Default()
		}
		noErr := true
		keys, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
			HTTPTimeout:               5 * time.Second,
			NoErrorReturnFirstHTTPReq: &noErr,
			RefreshInterval:           cmp.Or(cfg.JWKSRefresh, time.Hour),
			RefreshUnknownKID:         rate.NewLimiter(rate.Every(30*time.Second), 1),
			RateLimitWaitMax:          100 * time.Millisecond,
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(ctx context.Context, err error) {
					log.Warn("JWKS refresh failed", slog.String("url", u), slog.Any("error", err))
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS %s: %w", cfg.JWKSURL, err)
		}
		v.keys = keys
		v.jwks = jwt.NewParser(append(common, jwt.WithValidMethods(asymmetric))...)
	}
	return v, nil
}

// Verify parses an Authorization header value and returns the caller.
func (v *Verifier) Verify(ctx context.Context, header string) (Principal, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	raw = strings.TrimSpace(raw)
	if !ok || raw == "" {
		return Principal{}, apperr.Errorf(apperr.Unauthenticated, "missing bearer token")
	}
	now := time.Now()
	if p, ok := v.cache.get(raw, now); ok {
		return p, nil
	}
	var claims Claims
	var err error
	cacheable := false
	switch alg := headerAlg(raw); {
	case alg == jwt.SigningMethodHS256.Alg() && v.hmac != nil:
		_, err = v.hmac.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return v.secret, nil })
		cacheable = true
	case slices.Contains(asymmetric, alg) && v.jwks != nil:
		_, err = v.jwks.ParseWithClaims(raw, &claims, v.keys.KeyfuncCtx(ctx))
	default:
		return Principal{}, apperr.Errorf(apperr.Unauthenticated, "invalid token: algorithm not accepted")
	}
	if err != nil {
		return Principal{}, apperr.Errorf(apperr.Unauthenticated, "invalid token: %s", reason(err))
	}
	if user.ValidateID(claims.Subject) != nil {
		return Principal{}, apperr.Errorf(apperr.Unauthenticated,
			"invalid token: sub must be 1 to %d characters of UTF-8 without control characters", user.MaxIDLength)
	}
	p := Principal{UserID: claims.Subject, Roles: slices.Clip(claims.Roles)}
	// The parser requires exp, so ExpiresAt is set.
	until := now.Add(cacheTTL)
	if exp := claims.ExpiresAt.Time; exp.Before(until) {
		until = exp
	}
	if cacheable {
		v.cache.put(raw, p, until, now)
	}
	return p, nil
}

// headerAlg reads the alg of a compact JWS without trusting it: it only
// picks which pinned parser (and key source) gets to verify the token.
func headerAlg(token string) string {
	head, _, ok := strings.Cut(token, ".")
	if !ok || len(head) > 4096 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	// A map, like the parser's own header: "alg" only, never "ALG".
	var h map[string]any
	if json.Unmarshal(b, &h) != nil {
		return ""
	}
	alg, _ := h["alg"].(string)
	return alg
}

// reason names what was wrong with a token without echoing it.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "required claim missing"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "bad signature or algorithm"
	case errors.Is(err, errDuplicateClaim):
		return "duplicate claim"
	case errors.Is(err, errClaimsText):
		return "claims are not valid UTF-8"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	default:
		return "rejected"
	}
}

// Mint signs an HS256 token (dev tokens, tests).
func Mint(secret []byte, sub string, roles []string, ttl time.Duration, issuer, audience string) (string, error) {
	now := time.Now()
	claims := Claims{
		Roles: roles,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			Issuer:    issuer,
		},
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller stored by WithPrincipal.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
