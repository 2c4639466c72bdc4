package nflog

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
)

func be32(n uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, n); return b }

func ipv4SYN(src, dst [4]byte, sport, dport uint16) []byte {
	b := make([]byte, 40)
	b[0] = 0x45
	b[9] = 6 // TCP
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	b[33] = 0x02 // SYN
	return b
}

func ipv6SYNWithHopByHop(src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, 40+8+20)
	b[0] = 0x60
	b[6] = 0 // next header: hop-by-hop options
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	b[40] = 6 // hop-by-hop's next header: TCP
	b[41] = 0 // length 8 octets
	binary.BigEndian.PutUint16(b[48:], sport)
	binary.BigEndian.PutUint16(b[50:], dport)
	return b
}

func message(t *testing.T, attrs []netlink.Attribute) []byte {
	t.Helper()
	ad, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0, 77}, ad...)
}

func TestParseMessage(t *testing.T) {
	ts := make([]byte, 16)
	binary.BigEndian.PutUint64(ts, 1700000000)
	binary.BigEndian.PutUint64(ts[8:], 250000)
	v6src, v6dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::25")
	tests := []struct {
		name  string
		attrs []netlink.Attribute
		want  Packet
	}{
		{
			name: "IPv4 SYN with uid, gid, timestamp, prefix",
			attrs: []netlink.Attribute{
				{Type: attrPacketHdr, Data: []byte{0x08, 0x00, 3, 0}},
				{Type: attrTimestamp, Data: ts},
				{Type: attrIfOut, Data: be32(2)},
				{Type: attrPrefix, Data: []byte("rg\x00")},
				{Type: attrUID, Data: be32(4343)},
				{Type: attrGID, Data: be32(4344)},
				{Type: attrPayload, Data: ipv4SYN([4]byte{10, 0, 0, 1}, [4]byte{192, 0, 2, 25}, 40000, 25)},
			},
			want: Packet{
				Time: time.Unix(1700000000, 250000000), Proto: 0x0800, Prefix: "rg", OutIf: 2,
				UID: 4343, GID: 4344, HasUID: true, TCP: true,
				Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.25"), SrcPort: 40000, DstPort: 25,
			},
		},
		{
			name: "IPv6 SYN behind a hop-by-hop header, no socket owner",
			attrs: []netlink.Attribute{
				{Type: attrPacketHdr, Data: []byte{0x86, 0xdd, 3, 0}},
				{Type: attrPayload, Data: ipv6SYNWithHopByHop(v6src, v6dst, 50000, 587)},
			},
			want: Packet{Proto: 0x86dd, TCP: true, Src: v6src, Dst: v6dst, SrcPort: 50000, DstPort: 587},
		},
		{
			name: "truncated IPv4 payload",
			attrs: []netlink.Attribute{
				{Type: attrPayload, Data: []byte{0x45, 0, 0}},
			},
			want: Packet{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMessage(message(t, tc.attrs))
			if err != nil {
				t.Fatal(err)
			}
			got.Payload = nil
			if !got.Time.Equal(tc.want.Time) {
				t.Errorf("time %v, want %v", got.Time, tc.want.Time)
			}
			got.Time, tc.want.Time = time.Time{}, time.Time{}
			if got.Src != tc.want.Src || got.Dst != tc.want.Dst || got.SrcPort != tc.want.SrcPort ||
				got.DstPort != tc.want.DstPort || got.TCP != tc.want.TCP || got.UID != tc.want.UID ||
				got.GID != tc.want.GID || got.HasUID != tc.want.HasUID || got.Prefix != tc.want.Prefix ||
				got.Proto != tc.want.Proto || got.OutIf != tc.want.OutIf {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if _, err := ParseMessage([]byte{1, 2}); err == nil {
		t.Error("short message accepted")
	}
}
