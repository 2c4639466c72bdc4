// Package redact hides secrets in what is shown to people: errors and logs.
// It is a leaf: config (which checks [store] url) and store (which reports
// what go-redis says of it) both name a URL through it.
package redact

import "net/url"

// URL names a URL that may hold a password ([store] url) in errors
// and logs: the password of its user information and the value of every
// query parameter are "xxxxx". url.Redacted hides only the first, but an
// operator used to other Redis clients writes ?password=... (go-redis
// refuses it as an unexpected option, and the refusal named the URL).
// The parameters' names stay: go-redis's errors name them.
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL, not shown: it may hold a password)"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			for i := range vs {
				vs[i] = "xxxxx"
			}
			q[k] = vs
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
