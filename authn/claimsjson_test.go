package authn

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzClaimsJSON checks that Claims.UnmarshalJSON, fast path or not,
// decodes exactly what encoding/json decodes, and fails where it fails.
func FuzzClaimsJSON(f *testing.F) {
	for _, seed := range []string{
		`{"iss":"chatd","sub":"u1","aud":["chatd"],"exp":1795883714,"nbf":1795882814,"iat":1795882814,"jti":"abc","name":"alice","sid":"s1","auth_time":1795882814}`,
		`{"iss":"chatd","aud":"chatd","exp":1795883714,"rooms":[]}`,
		`{"aud":[],"rooms":["a","b"],"name":"Zoë"}`,
		` { "exp" : -5 , "name" : "x" } `,
		`{"exp":1.5}`, `{"exp":1e3}`, `{"EXP":12}`, `{"exp":null}`, `{"aud":null}`, `{"rooms":null}`,
		`{"name":"a\u0041"}`, `{"name":"\xff"}`, `{"other":{"x":[1,2]}}`, `{"exp":"12"}`, `{"aud":[1]}`,
		`{"exp":12,"exp":13}`, `{"rooms":["a"],"rooms":[]}`, `{"exp":0123}`, `{}`, `[]`, `{"exp":12345678901234567}`,
		`{"auth_time":99999999999999999999}`, `{"name":"a"`, `{"name":"a",}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want plainClaims
		wantErr := json.Unmarshal(data, &want)
		var got Claims
		gotErr := json.Unmarshal(data, &got)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("%q: error %v, encoding/json's %v", data, gotErr, wantErr)
		}
		if wantErr == nil && !reflect.DeepEqual(Claims(want), got) {
			t.Fatalf("%q:\n got %+v\nwant %+v", data, got, Claims(want))
		}
	})
}

// The fast path really is taken for the tokens chatd issues.
func TestClaimsJSONFastPath(t *testing.T) {
	data := []byte(`{"iss":"chatd","sub":"u1","aud":["chatd"],"exp":1795883714,"nbf":1795882814,"iat":1795882814,"jti":"abc","name":"alice","sid":"s1","auth_time":1795882814,"rooms":["a"]}`)
	var c Claims
	if !decodeClaims(data, &c) {
		t.Fatal("fast path refused chatd's own claims")
	}
	if c.Name != "alice" || c.Expiry().Unix() != 1795883714 || len(c.Audience) != 1 || c.AuthTime != 1795882814 || len(c.Rooms) != 1 {
		t.Fatalf("decoded %+v", c)
	}
}

// BenchmarkVerify is the cost of verifying one token, most of it decoding
// its claims (go test -bench Verify ./authn).
func BenchmarkVerify(b *testing.B) {
	tokens, err := NewTokens(TokenConfig{Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	issued, err := tokens.Issue(&User{ID: "u1", Name: "alice"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tokens.Verify(issued.Token); err != nil {
			b.Fatal(err)
		}
	}
}
