package user

import (
	"unicode"
	"unicode/utf8"

	"proxyusage/internal/apperr"
)

// MaxIDLength bounds a user id, in characters (users.id checks the same).
const MaxIDLength = 256

// ValidateID is the one rule for a user id, wherever it comes from: the
// JWT sub, or a userId in a query, path or body. An id is 1 to 256
// characters of valid UTF-8 without control characters, so that every id
// the service accepts can be stored (PostgreSQL refuses NUL and invalid
// UTF-8), logged and written to CSV as the same string, and two different
// inputs never name the same user. A violation is apperr.Invalid; the
// authenticator reports it as a bad token instead.
func ValidateID(id string) error {
	if id == "" {
		return apperr.Errorf(apperr.Invalid, "userId must not be empty")
	}
	if len(id) > utf8.UTFMax*MaxIDLength { // too long whatever it holds
		return apperr.Errorf(apperr.Invalid, "userId must be at most %d characters", MaxIDLength)
	}
	if !utf8.ValidString(id) {
		return apperr.Errorf(apperr.Invalid, "userId must be valid UTF-8")
	}
	n := 0
	for _, r := range id {
		if unicode.IsControl(r) {
			return apperr.Errorf(apperr.Invalid, "userId must not contain control characters")
		}
		n++
	}
	if n > MaxIDLength {
		return apperr.Errorf(apperr.Invalid, "userId must be at most %d characters", MaxIDLength)
	}
	return nil
}
