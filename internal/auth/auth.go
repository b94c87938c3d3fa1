// Package auth verifies the JWT bearer tokens that authenticate every API
// call and carries the caller (Principal) through the request context.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"proxyusage/internal/apperr"
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

// CanWriteAny reports whether the caller may record events for any
// registered proxy, not only its own.
func (p Principal) CanWriteAny() bool {
	return p.IsAdmin() || slices.Contains(p.Roles, RoleService)
}

// Claims is the token payload we read.
type Claims struct {
	Roles []string `json:"roles,omitempty"`
	jwt.RegisteredClaims
}

// Config configures a Verifier.
type Config struct {
	Secret   []byte // HS256 key
	Issuer   string // checked when set
	Audience string // checked when set
}

// Verifier checks bearer tokens. Only HS256 is accepted: alg is pinned so
// that "none" and algorithm confusion are refused.
type Verifier struct {
	parser *jwt.Parser
	secret []byte
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("auth: a secret is required")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(30 * time.Second),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &Verifier{parser: jwt.NewParser(opts...), secret: cfg.Secret}, nil
}

// MaxUserIDLength bounds the sub claim (users.id).
const MaxUserIDLength = 256

// Verify parses an Authorization header value and returns the caller.
func (v *Verifier) Verify(header string) (Principal, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || strings.TrimSpace(raw) == "" {
		return Principal{}, apperr.Errorf(apperr.Unauthenticated, "missing bearer token")
	}
	var claims Claims
	_, err := v.parser.ParseWithClaims(strings.TrimSpace(raw), &claims, func(t *jwt.Token) (any, error) {
		return v.secret, nil
	})
	if err != nil {
		return Principal{}, apperr.Errorf(apperr.Unauthenticated, "invalid token: %s", reason(err))
	}
	if claims.Subject == "" || len(claims.Subject) > MaxUserIDLength {
		return Principal{}, apperr.Errorf(apperr.Unauthenticated, "invalid token: sub claim missing or too long")
	}
	return Principal{UserID: claims.Subject, Roles: claims.Roles}, nil
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
