package logline

import "net/netip"

// DottedQuad reads the IPv4 address at the start of s in the form
// netip.ParseAddr accepts (four decimal fields of 0-255 without leading
// zeros) and returns the same Addr and the index after it; ok is false
// when s does not start so, and the caller has netip.ParseAddr read it (a
// Dovecot line's address is read on every failed login of a botnet, and
// netip's parser costs several times this one). logwatch reads Dovecot's and
// Postfix's clients with it, maillog relayguard's own records' clients.
func DottedQuad(s string) (ip netip.Addr, n int, ok bool) {
	var b [4]byte
	i := 0
	for f := range 4 {
		if f > 0 {
			if i >= len(s) || s[i] != '.' {
				return ip, 0, false
			}
			i++
		}
		// The field: one to three digits, no leading zero (a field
		// starting with 0 is "0"), at most 255; read in line (as a call
		// per field it cost twice as much).
		if i >= len(s) {
			return ip, 0, false
		}
		v := uint(s[i] - '0')
		if v > 9 {
			return ip, 0, false
		}
		i++
		if v != 0 && i < len(s) {
			if d := uint(s[i] - '0'); d <= 9 {
				v = v*10 + d
				i++
				if i < len(s) {
					if d := uint(s[i] - '0'); d <= 9 {
						if v = v*10 + d; v > 255 {
							return ip, 0, false
						}
						i++
					}
				}
			}
		}
		b[f] = byte(v)
	}
	if i < len(s) && (s[i]-'0' <= 9 || s[i] == '.') { // a longer field, or more of them
		return ip, 0, false
	}
	return netip.AddrFrom4(b), i, true
}
