package report

import (
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/maillog"
)

// actorStat is what one local user or one login did according to
// relayguard's own records: messages the milter accepted, held or refused
// for it, and its blocked direct connections to remote mail ports. A web
// script running as www-data is the same actor, "www-data (uid 33)",
// whether it went through sendmail or tried port 25 itself.
type actorStat struct {
	accepted, held, refused, egress int64
}

// ActorRow is one local user's or login's sending.
type ActorRow struct {
	Who          string `json:"who"`
	Accepted     int64  `json:"accepted"`
	Held         int64  `json:"held"`
	Refused      int64  `json:"refused"`
	EgressBlocks int64  `json:"egress_blocks"`
}

// actorName names a local user by name and uid, a login by itself.
func actorName(user string, uid int) string {
	switch {
	case uid < 0:
		return user
	case user == "":
		return "uid " + strconv.Itoa(uid)
	}
	return user + " (uid " + strconv.Itoa(uid) + ")"
}

func (s *abuseState) actor(user string, uid int) *actorStat {
	who := actorName(user, uid)
	if who == "" {
		who = "(unknown)"
	}
	if s.actors == nil {
		s.actors = map[string]*actorStat{}
	}
	a := s.actors[who]
	if a == nil {
		a = &actorStat{}
		s.actors[strings.Clone(who)] = a // (a login's name is a substring of the line)
	}
	return a
}

// milterDecision counts one record of relayguard milter.
func (s *abuseState) milterDecision(r maillog.Record) {
	a := s.actor(r.User, r.UID)
	switch r.Action {
	case maillog.MilterAccept:
		a.accepted++
	case maillog.MilterQuarantine:
		a.held++
	default:
		a.refused++
	}
}

func (s *abuseState) actorRows() []ActorRow {
	out := make([]ActorRow, 0, len(s.actors))
	for who, a := range s.actors {
		out = append(out, ActorRow{Who: who, Accepted: a.accepted, Held: a.held, Refused: a.refused, EgressBlocks: a.egress})
	}
	return byHost(out, -1, func(r *ActorRow) int64 { return r.Held + r.Refused + r.EgressBlocks }, func(r *ActorRow) string { return r.Who })
}
