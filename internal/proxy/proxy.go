// Package proxy is the registry of proxies: registration, ownership and
// archiving. Proxies are never hard-deleted so that billing history stays.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
)

// Proxy is a registered proxy.
type Proxy struct {
	ID         string
	UserID     string
	Name       string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	ArchivedAt *time.Time
}

// Archived reports whether the proxy no longer accepts events.
func (p Proxy) Archived() bool { return p.ArchivedAt != nil }

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// MaxNameLength bounds a proxy's display name (characters).
const MaxNameLength = 256

// ValidateID checks the proxy id syntax (docs/api.md, "Usage events").
func ValidateID(id string) error {
	// "." and ".." are dot-segments that HTTP clients rewrite (RFC 3986
	// §5.2.4), so such a proxy could never be addressed reliably.
	if !idPattern.MatchString(id) || id == "." || id == ".." {
		return apperr.Errorf(apperr.Invalid, "proxyId must be 1-128 characters of [A-Za-z0-9._:-] (and not . or ..)")
	}
	return nil
}

// Service registers, lists and archives proxies for the API.
type Service interface {
	Register(ctx context.Context, caller auth.Principal, id string, reg Registration) (p Proxy, created bool, err error)
	Page(ctx context.Context, userID string, req PageRequest) (page []Proxy, more bool, err error)
	Archive(ctx context.Context, caller auth.Principal, id string) error
}

// Store is the Service on PostgreSQL; the other domains also read
// proxies and check ownership through it.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

var _ Service = (*Store)(nil)

const columns = `id, user_id, name, created_at, updated_at, archived_at`

func scan(row pgx.Row) (Proxy, error) {
	var p Proxy
	err := row.Scan(&p.ID, &p.UserID, &p.Name, &p.CreatedAt, &p.UpdatedAt, &p.ArchivedAt)
	return p, err
}

// MaxRegistrationBytes bounds a Registration's JSON body.
const MaxRegistrationBytes = 64 << 10

// Registration is the body of PUT /proxies/{proxyId}.
type Registration struct {
	Name *string `json:"name"` // nil: keep the name (empty for a new proxy)
}

// Validate checks the name: valid text of at most MaxNameLength characters.
func (r *Registration) Validate() error {
	if n := r.Name; n != nil && (utf8.RuneCountInString(*n) > MaxNameLength || !utf8.ValidString(*n) || containsNUL(*n)) {
		return apperr.Errorf(apperr.Invalid, "name must be valid text of at most %d characters", MaxNameLength)
	}
	return nil
}

// Register creates the proxy for the caller, or updates (and un-archives)
// the caller's own proxy. created reports whether it is new. An id held by
// another user is a conflict; an admin may update any proxy. reg has
// passed Validate (the HTTP layer decodes bodies with strictjson, which
// runs it).
func (s *Store) Register(ctx context.Context, caller auth.Principal, id string, reg Registration) (p Proxy, created bool, err error) {
	if err := ValidateID(id); err != nil {
		return Proxy{}, false, err
	}
	name := reg.Name
	// One statement decides create vs update atomically; xmax = 0 marks an
	// inserted row.
	row := s.pool.QueryRow(ctx, `
		INSERT INTO proxies AS p (id, user_id, name) VALUES ($1, $2, coalesce($3, ''))
		ON CONFLICT (id) DO UPDATE
		   SET name = coalesce($3, p.name), archived_at = NULL, updated_at = now()
		 WHERE p.user_id = $2 OR $4
		RETURNING `+columns+`, (xmax = 0)`, id, caller.UserID, name, caller.IsAdmin())
	err = row.Scan(&p.ID, &p.UserID, &p.Name, &p.CreatedAt, &p.UpdatedAt, &p.ArchivedAt, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return Proxy{}, false, apperr.Errorf(apperr.Conflict, "proxy id %q is already registered by another user", id)
	}
	if err != nil {
		return Proxy{}, false, fmt.Errorf("register proxy: %w", err)
	}
	return p, created, nil
}

// IDs returns the ids of a user's proxies, archived ones included: the
// proxies whose usage a user's reports and bills cover.
func (s *Store) IDs(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM proxies WHERE user_id = $1 ORDER BY id COLLATE "C"`, userID)
	if err != nil {
		return nil, fmt.Errorf("list proxies: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list proxies: %w", err)
	}
	return ids, nil
}

// MaxPageSize is the largest (and the default) page of GET /proxies.
const MaxPageSize = 1000

// PageRequest asks for one page of a user's proxies in ascending id order.
type PageRequest struct {
	Limit int    // 1 to MaxPageSize
	After string // the cursor: the last id of the previous page; "" for the first page
}

// Validate checks the limit and the cursor's syntax (a cursor need not
// name an existing proxy).
func (r *PageRequest) Validate() error {
	if r.Limit < 1 || r.Limit > MaxPageSize {
		return apperr.Errorf(apperr.Invalid, "limit must be an integer from 1 to %d", MaxPageSize)
	}
	if r.After != "" && ValidateID(r.After) != nil {
		return apperr.Errorf(apperr.Invalid, "after must be a proxyId (the nextAfter of the previous page)")
	}
	return nil
}

// Page returns the user's proxies (archived ones included) with ids after
// req.After, at most req.Limit of them in ascending id order, and whether
// more follow. One keyset query on (user_id, id in byte order) reads one
// row past the page to tell. req has passed Validate.
func (s *Store) Page(ctx context.Context, userID string, req PageRequest) (page []Proxy, more bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM proxies WHERE user_id = $1 AND id COLLATE "C" > $2 ORDER BY id COLLATE "C" LIMIT $3`,
		userID, req.After, req.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list proxies: %w", err)
	}
	page, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Proxy, error) { return scan(r) })
	if err != nil {
		return nil, false, fmt.Errorf("list proxies: %w", err)
	}
	if len(page) > req.Limit {
		return page[:req.Limit], true, nil
	}
	return page, false, nil
}

// Archive archives a proxy the caller owns (admin: any). Archiving twice
// is fine. Someone else's proxy is reported as not found.
func (s *Store) Archive(ctx context.Context, caller auth.Principal, id string) error {
	if err := ValidateID(id); err != nil {
		return apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE proxies SET archived_at = coalesce(archived_at, now()), updated_at = now()
		 WHERE id = $1 AND (user_id = $2 OR $3)`, id, caller.UserID, caller.IsAdmin())
	if err != nil {
		return fmt.Errorf("archive proxy: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	return nil
}

// Get returns a proxy the caller may read: its own, or any for an admin.
func (s *Store) Get(ctx context.Context, caller auth.Principal, id string) (Proxy, error) {
	if ValidateID(id) != nil {
		return Proxy{}, apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	p, err := scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM proxies WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !caller.CanRead(p.UserID)) {
		return Proxy{}, apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	if err != nil {
		return Proxy{}, fmt.Errorf("get proxy: %w", err)
	}
	return p, nil
}

// Lookup returns the proxies among ids that exist, keyed by id.
func (s *Store) Lookup(ctx context.Context, ids []string) (map[string]Proxy, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM proxies WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("lookup proxies: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Proxy, error) { return scan(r) })
	if err != nil {
		return nil, fmt.Errorf("lookup proxies: %w", err)
	}
	m := make(map[string]Proxy, len(list))
	for _, p := range list {
		m[p.ID] = p
	}
	return m, nil
}

// CheckWritable says whether caller may record events into p (nil: unknown
// proxy). Unknown or someone else's proxy is not found; archived is a
// conflict.
func CheckWritable(caller auth.Principal, p *Proxy) error {
	if p == nil || !caller.CanWrite(p.UserID) {
		return apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	if p.Archived() {
		return apperr.Errorf(apperr.Conflict, "proxy %q is archived and accepts no events", p.ID)
	}
	return nil
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// Owners maps every proxy id to its owner (cross-user aggregation).
func (s *Store) Owners(ctx context.Context) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, user_id FROM proxies`)
	if err != nil {
		return nil, fmt.Errorf("proxy owners: %w", err)
	}
	out := map[string]string{}
	var id, uid string
	_, err = pgx.ForEachRow(rows, []any{&id, &uid}, func() error {
		out[id] = uid
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("proxy owners: %w", err)
	}
	return out, nil
}
