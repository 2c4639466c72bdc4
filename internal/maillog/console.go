package maillog

import (
	"context"
	"log/slog"
	"net/netip"
)

// Records of the web console (internal/console). A console login is an
// AUTH like any other: AuthOK and AuthFailed with listener "console" and
// mechanism "password", so that the guard, the report's abuse view and
// the fail2ban filter count failed console logins as they count failed
// SMTP AUTH. What an operator does once logged in is a ConsoleAction.
const KindConsoleAction Kind = "console action"

// ConsoleListener is the listener a console login's records name.
const ConsoleListener = "console"

// ConsoleAct is one operator action taken through the console or its API.
type ConsoleAct struct {
	Admin  string     // who: the admin account (and ", token ID" for an API token)
	Client netip.Addr // from where
	Action string     // what: "unban", "queue.release", "account.suspend", ...
	Target string     // on what: a prefix, a queue id, an account
	Reason string     // the operator's reason, if one was given
	Err    string     // why it failed; "" when it was done
}

// ConsoleAction: an operator acted through the console. A refused or
// failed action is logged at warning level with err.
func (m *Logger) ConsoleAction(ctx context.Context, a ConsoleAct) {
	lvl := slog.LevelInfo
	if a.Err != "" {
		lvl = slog.LevelWarn
	}
	m.log(ctx, lvl, KindConsoleAction, slog.String("user", a.Admin), addr("client", a.Client),
		slog.String("action", a.Action), slog.String("text", a.Target), slog.String("reason", a.Reason), slog.String("err", a.Err))
}
