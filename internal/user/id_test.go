package user

import (
	"strings"
	"testing"

	"proxyusage/internal/apperr"
)

func TestValidateID(t *testing.T) {
	for id, ok := range map[string]bool{
		"alice": true, "a b": true, "😀": true, "ユーザー": true, "\u200b": true, // printable or format, not control
		strings.Repeat("x", 256): true, strings.Repeat("é", 256): true, strings.Repeat("😀", 256): true,
		"": false, strings.Repeat("x", 257): false, strings.Repeat("é", 257): false, strings.Repeat("😀", 257): false,
		"a\x00b": false, "a\tb": false, "a\nb": false, "\x1f": false, "\x7f": false, "\u0080": false, "\u009f": false,
		"a\xffb": false, "\xc3": false, "\xed\xa0\x80": false, "\xc0\xaf": false,
	} {
		err := ValidateID(id)
		if (err == nil) != ok {
			t.Errorf("ValidateID(%q) = %v, want ok %v", id, err, ok)
		}
		if err != nil && apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("ValidateID(%q): code %s, want %s", id, apperr.CodeOf(err), apperr.Invalid)
		}
	}
}
