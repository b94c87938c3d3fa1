package exact_test

import (
	"context"
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/exact"
	"proxyusage/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func big10(s string) *big.Int {
	b, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return b
}

func mustParse(t *testing.T, s string) exact.Sum {
	t.Helper()
	v, err := exact.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Random sums, many crossing 2^64, against math/big.
func TestAddMatchesBig(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 2000 {
		var s exact.Sum
		want := new(big.Int)
		for range 1 + rng.IntN(40) {
			var n uint64
			switch rng.IntN(4) {
			case 0:
				n = rng.Uint64N(1 << 20)
			case 1:
				n = math.MaxUint64 - rng.Uint64N(3)
			default:
				n = rng.Uint64()
			}
			s = s.Add(exact.Of(n))
			want.Add(want, new(big.Int).SetUint64(n))
			if rng.IntN(5) == 0 { // adding a big sum to a big sum
				s = s.Add(s)
				want.Add(want, want)
			}
		}
		if s.BigInt().Cmp(want) != 0 || s.String() != want.String() {
			t.Fatalf("sum = %s, want %s", s, want)
		}
		f, _ := new(big.Float).SetInt(want).Float64()
		if s.Float64() != f {
			t.Fatalf("Float64(%s) = %g, want %g", s, s.Float64(), f)
		}
		if back := mustParse(t, want.String()); back.Cmp(s) != 0 {
			t.Fatalf("Parse(%s) = %s", want, back)
		}
	}
}

func TestCarryIntoBig(t *testing.T) {
	s := exact.Of(math.MaxUint64).Add(exact.Of(1))
	if s.String() != "18446744073709551616" {
		t.Fatalf("2^64-1 + 1 = %s", s)
	}
	if _, fits := s.Uint64(); fits {
		t.Fatal("2^64 reported as fitting in 64 bits")
	}
	// Operands are values: adding to s must not change s.
	a := s.Add(exact.Of(5))
	if s.String() != "18446744073709551616" || a.String() != "18446744073709551621" {
		t.Fatalf("s = %s, s+5 = %s", s, a)
	}
	if s.Cmp(exact.Of(math.MaxUint64)) != 1 || exact.Of(3).Cmp(s) != -1 || s.Cmp(mustParse(t, "18446744073709551616")) != 0 {
		t.Fatal("Cmp across representations")
	}
	var zero exact.Sum
	if !zero.IsZero() || zero.String() != "0" || s.IsZero() {
		t.Fatal("IsZero / zero value")
	}
}

func TestJSON(t *testing.T) {
	type doc struct {
		N exact.Sum `json:"n"`
	}
	for _, s := range []string{"0", "7", "9223372036854775807", "9223372036854775808", "18446744073709551615",
		"18446744073709551616", "10141204801825835211973625643008", "340282366920938463463374607431768211456999"} {
		b, err := json.Marshal(doc{N: mustParse(t, s)})
		if err != nil || string(b) != `{"n":`+s+`}` {
			t.Fatalf("Marshal %s = %s, %v", s, b, err)
		}
		var d doc
		if err := json.Unmarshal(b, &d); err != nil || d.N.String() != s {
			t.Fatalf("Unmarshal %s = %s, %v", b, d.N, err)
		}
	}
	for _, bad := range []string{`-1`, `1.5`, `1e3`, `"1"`, `01`, `true`, `1.0`, `-0`, `[]`} {
		var d doc
		if err := json.Unmarshal([]byte(`{"n":`+bad+`}`), &d); err == nil {
			t.Errorf("Unmarshal %s accepted: %s", bad, d.N)
		}
	}
	d := doc{N: exact.Of(7)}
	if err := json.Unmarshal([]byte(`{"n":null}`), &d); err != nil || d.N.String() != "7" {
		t.Errorf("null: %s, %v", d.N, err)
	}
	for _, bad := range []string{"", "-1", "+1", "1_000", "١", "12a", "00"} {
		if v, err := exact.Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %s, want an error", bad, v)
		}
	}
}

// What PostgreSQL sends: the numeric's text (the fast path) and the
// numeric itself (pgx's decoding), for values on both sides of 2^63 and 2^64.
func TestScanFromPostgres(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range []string{"0", "1", "120000", "9223372036854775807", "9223372036854775808", "18446744073709551615",
		"18446744073709551616", "10141204801825835211973625643008", "1000000000000000000000000000000000000000000000"} {
		var asText, asNumeric, sum exact.Sum
		if err := conn.QueryRow(ctx, `SELECT $1::numeric::text, $1::numeric, (SELECT sum(x) FROM (VALUES ($1::numeric), (0::bigint)) v(x))::text`, s).
			Scan(&asText, &asNumeric, &sum); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if asText.String() != s || asNumeric.String() != s || sum.String() != s {
			t.Fatalf("%s scanned as text %s, as numeric %s, summed %s", s, asText, asNumeric, sum)
		}
	}
	// A numeric with a scale prints its zero fraction; NULL (a sum of no
	// rows) is 0; fractions and negatives are refused, not rounded.
	var scaled, null exact.Sum
	if err := conn.QueryRow(ctx, `SELECT 12.000::numeric::text, NULL::numeric::text`).Scan(&scaled, &null); err != nil || scaled.String() != "12" || !null.IsZero() {
		t.Fatalf("12.000 → %s, NULL → %s, %v", scaled, null, err)
	}
	for _, q := range []string{`SELECT 1.5::numeric::text`, `SELECT (-1)::numeric::text`, `SELECT 1.5::numeric`, `SELECT (-1)::numeric`, `SELECT 'NaN'::numeric`} {
		var v exact.Sum
		if err := conn.QueryRow(ctx, q).Scan(&v); err == nil {
			t.Errorf("%s scanned as %s, want an error", q, v)
		}
	}
}

func BenchmarkAddSmall(b *testing.B) {
	var s exact.Sum
	for b.Loop() {
		s = s.Add(exact.Of(12345))
	}
	_ = s
}
