package ban

import (
	"testing"
	"time"
)

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	perm := Ban{}
	temp := Ban{Until: now.Add(time.Minute)}
	if !perm.Permanent() || perm.Expired(now.Add(100*365*24*time.Hour)) || perm.Remaining(now) != 0 {
		t.Errorf("permanent ban: %v %v %v", perm.Permanent(), perm.Expired(now), perm.Remaining(now))
	}
	if temp.Permanent() || temp.Expired(now) || temp.Remaining(now) != time.Minute {
		t.Errorf("temporary ban before expiry: %v %v %v", temp.Permanent(), temp.Expired(now), temp.Remaining(now))
	}
	if !temp.Expired(now.Add(time.Minute)) || temp.Remaining(now.Add(2*time.Minute)) != -time.Minute {
		t.Errorf("temporary ban at/after expiry: %v %v", temp.Expired(now.Add(time.Minute)), temp.Remaining(now.Add(2*time.Minute)))
	}
}
