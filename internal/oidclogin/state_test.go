package oidclogin

import (
	"bytes"
	"testing"
	"time"
)

func TestSealer(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s, err := NewSealer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSealer(bytes.Repeat([]byte{8}, 32))
	st := State{Provider: "corp", State: "s", Nonce: "n", Verifier: "v", Return: "/dash", Host: "console.fleet.test", Exp: now.Unix() + 600}
	v := s.Seal(st)
	if got, err := s.Open(v, now); err != nil || got != st {
		t.Fatalf("Open: %+v, %v", got, err)
	}
	if bytes.Contains([]byte(v), []byte("console")) {
		t.Fatal("the sealed state shows its content")
	}
	tampered := []byte(v)
	tampered[len(tampered)/2] ^= 1
	for name, tc := range map[string]struct {
		v   string
		s   *Sealer
		now time.Time
	}{
		"tampered": {string(tampered), s, now}, "another key": {v, other, now},
		"expired": {v, s, now.Add(601 * time.Second)}, "empty": {"", s, now}, "not base64": {"%%%", s, now},
	} {
		if _, err := tc.s.Open(tc.v, tc.now); err != ErrState {
			t.Errorf("%s: %v, want ErrState", name, err)
		}
	}
	if _, err := NewSealer(make([]byte, 16)); err == nil {
		t.Fatal("a short secret must be refused")
	}
}

func TestGroups(t *testing.T) {
	if g := groups([]any{"ops", 3, "", "dev"}); len(g) != 2 || g[0] != "ops" || g[1] != "dev" {
		t.Fatalf("groups %v", g)
	}
	if g := groups("ops"); len(g) != 1 {
		t.Fatalf("groups %v", g)
	}
	if g := groups(nil); g != nil {
		t.Fatalf("groups %v", g)
	}
}
