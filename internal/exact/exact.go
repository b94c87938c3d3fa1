// Package exact holds Sum, a non-negative integer total that never wraps:
// byte totals and microsecond sums grow without bound as events add up
// (9,000 events of the 2^50-byte maximum already pass 2^63), and a billing
// service must serve them with every digit, not a wrapped int64 or an
// error.
//
// A Sum is a plain uint64 while it fits and switches to math/big beyond
// 2^64, so the sums of real traffic cost no more than int64 arithmetic.
// It reads from PostgreSQL as the decimal text of a numeric (cast the sum
// `::text`, which pgx hands over without allocating) or as a numeric, and
// marshals to a JSON integer with all its digits.
package exact

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"

	"github.com/jackc/pgx/v5/pgtype"
)

// Sum is an exact non-negative integer. The zero value is 0. Sums are
// values: Add returns a new Sum and never changes its operands.
type Sum struct {
	small uint64   // the value, while big is nil
	big   *big.Int // the value once it is 2^64 or more; never mutated
}

// Of returns n as a Sum.
func Of(n uint64) Sum { return Sum{small: n} }

// Add returns s + o.
func (s Sum) Add(o Sum) Sum {
	if s.big == nil && o.big == nil {
		if v := s.small + o.small; v >= s.small {
			return Sum{small: v}
		}
	}
	return fromBig(new(big.Int).Add(s.view(), o.view()))
}

// view returns s as a big.Int that must not be changed.
func (s Sum) view() *big.Int {
	if s.big != nil {
		return s.big
	}
	return new(big.Int).SetUint64(s.small)
}

// fromBig keeps b (non-negative) in the compact form when it fits.
func fromBig(b *big.Int) Sum {
	if b.IsUint64() {
		return Sum{small: b.Uint64()}
	}
	return Sum{big: b}
}

// IsZero reports whether s is 0.
func (s Sum) IsZero() bool { return s.big == nil && s.small == 0 }

// Uint64 returns s and whether it fits in a uint64.
func (s Sum) Uint64() (uint64, bool) { return s.small, s.big == nil }

// Cmp compares s and o: -1, 0 or +1.
func (s Sum) Cmp(o Sum) int {
	if s.big == nil && o.big == nil {
		switch {
		case s.small < o.small:
			return -1
		case s.small > o.small:
			return 1
		}
		return 0
	}
	return s.view().Cmp(o.view())
}

// BigInt returns s as a new big.Int.
func (s Sum) BigInt() *big.Int {
	if s.big != nil {
		return new(big.Int).Set(s.big)
	}
	return new(big.Int).SetUint64(s.small)
}

// Float64 returns the float64 nearest to s, for averages.
func (s Sum) Float64() float64 {
	if s.big == nil {
		return float64(s.small)
	}
	f, _ := new(big.Float).SetInt(s.big).Float64()
	return f
}

// String returns s in decimal.
func (s Sum) String() string { return string(s.Append(nil)) }

// Append appends s in decimal to dst.
func (s Sum) Append(dst []byte) []byte {
	if s.big == nil {
		return strconv.AppendUint(dst, s.small, 10)
	}
	return s.big.Append(dst, 10)
}

// MarshalJSON writes s as a JSON integer with all its digits.
func (s Sum) MarshalJSON() ([]byte, error) { return s.Append(make([]byte, 0, 20)), nil }

// UnmarshalJSON reads a JSON integer of any size: digits only, no sign,
// fraction or exponent. null leaves s unchanged, as encoding/json does.
func (s *Sum) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	v, err := parse(b, false)
	if err != nil {
		return fmt.Errorf("exact: JSON %q is not a non-negative integer", truncate(b))
	}
	*s = v
	return nil
}

// Parse reads a decimal integer of any size: digits only.
func Parse(text string) (Sum, error) {
	v, err := parse([]byte(text), false)
	if err != nil {
		return Sum{}, fmt.Errorf("exact: %q is not a non-negative integer", truncate([]byte(text)))
	}
	return v, nil
}

// ScanBytes reads the text of a non-negative integral numeric (the sum
// cast ::text; a trailing fraction of zeros, as a numeric with a scale
// prints, is allowed). NULL, a sum over no rows, is 0.
func (s *Sum) ScanBytes(src []byte) error {
	if src == nil {
		*s = Sum{}
		return nil
	}
	v, err := parse(src, true)
	if err != nil {
		return fmt.Errorf("exact: cannot scan %q: not a non-negative integer", truncate(src))
	}
	*s = v
	return nil
}

// ScanNumeric reads a numeric scanned without the ::text cast (slower:
// pgx builds a big.Int first). NULL is 0.
func (s *Sum) ScanNumeric(n pgtype.Numeric) error {
	if !n.Valid {
		*s = Sum{}
		return nil
	}
	if n.NaN || n.InfinityModifier != pgtype.Finite || n.Int == nil || n.Int.Sign() < 0 {
		return errors.New("exact: cannot scan a numeric that is not a non-negative integer")
	}
	v := new(big.Int).Set(n.Int)
	if n.Exp > 0 {
		v.Mul(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.Exp)), nil))
	} else if n.Exp < 0 {
		var rem big.Int
		v.QuoRem(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-n.Exp)), nil), &rem)
		if rem.Sign() != 0 {
			return errors.New("exact: cannot scan a numeric with a fraction")
		}
	}
	*s = fromBig(v)
	return nil
}

var errSyntax = errors.New("syntax")

// parse reads digits, then with zeroFraction an optional "." and zeros.
func parse(b []byte, zeroFraction bool) (Sum, error) {
	digits := b
	if zeroFraction {
		for i, c := range b {
			if c == '.' {
				digits = b[:i]
				frac := b[i+1:]
				if len(frac) == 0 {
					return Sum{}, errSyntax
				}
				for _, f := range frac {
					if f != '0' {
						return Sum{}, errSyntax
					}
				}
				break
			}
		}
	}
	if len(digits) == 0 || len(digits) > 1 && digits[0] == '0' {
		return Sum{}, errSyntax
	}
	var v uint64
	for i, c := range digits {
		if c < '0' || c > '9' {
			return Sum{}, errSyntax
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return parseBig(digits[i:], v)
		}
		v = v*10 + d
	}
	return Sum{small: v}, nil
}

// parseBig continues parse once the value no longer fits in 64 bits.
func parseBig(rest []byte, prefix uint64) (Sum, error) {
	for _, c := range rest {
		if c < '0' || c > '9' {
			return Sum{}, errSyntax
		}
	}
	tail, ok := new(big.Int).SetString(string(rest), 10)
	if !ok {
		return Sum{}, errSyntax
	}
	v := new(big.Int).SetUint64(prefix)
	v.Mul(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(rest))), nil))
	return fromBig(v.Add(v, tail)), nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
