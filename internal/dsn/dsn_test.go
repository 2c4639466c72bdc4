package dsn

import "testing"

func TestParameters(t *testing.T) {
	for in, want := range map[string]string{"failure,success": "SUCCESS,FAILURE", "never": "NEVER", "DELAY": "DELAY"} {
		if got, err := ParseNotify(in); err != nil || got != want {
			t.Errorf("ParseNotify(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "ALWAYS"} {
		if got, err := ParseNotify(bad); err == nil {
			t.Errorf("ParseNotify(%q) = %q", bad, got)
		}
	}
	if !Wants("", Failure) || !Wants("", Delay) || Wants("", Success) || Wants(Never, Failure) || !Wants("SUCCESS,DELAY", Delay) {
		t.Error("Wants")
	}
	if got, err := ParseORCPT("RFC822;bob+2Bext@example.com"); err != nil || got != "rfc822;bob+ext@example.com" {
		t.Errorf("ParseORCPT: %q %v", got, err)
	}
	for _, bad := range []string{"bob@example.com", "x400;bob", "rfc822;bob=x", "rfc822;bob+2", "rfc822;a+zz"} {
		if got, err := ParseORCPT(bad); err == nil {
			t.Errorf("ParseORCPT(%q) = %q", bad, got)
		}
	}
	if s := EncodeXtext("a+b=c d\xc3\xa9"); s != "a+2Bb+3Dc+20d+C3+A9" {
		t.Errorf("EncodeXtext: %q", s)
	}
	if s, err := DecodeXtext(EncodeXtext("id+1=x y")); err != nil || s != "id+1=x y" {
		t.Errorf("round trip: %q %v", s, err)
	}
	if _, err := ParseRet("headers"); err == nil {
		t.Error("RET=headers accepted")
	}
}
