// Package nflog reads packets logged to an NFLOG group (nfnetlink_log) by
// an nftables "log group N" or an iptables "-j NFLOG --nflog-group N" rule.
//
// It is written by hand over github.com/mdlayher/netlink because no
// suitable Go module exists: the known NFLOG bindings either wrap libnetfilter_log
// through cgo or pull in large dependency trees and hooks we do not need. The
// protocol subset used here is small — one config message to bind the
// group and set the copy mode, then parsing the attributes of
// NFULNL_MSG_PACKET messages (linux/netfilter/nfnetlink_log.h).
package nflog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Constants of linux/netfilter/nfnetlink.h and nfnetlink_log.h.
const (
	subsysULOG = 4 // NFNL_SUBSYS_ULOG

	msgPacket = 0 // NFULNL_MSG_PACKET
	msgConfig = 1 // NFULNL_MSG_CONFIG

	attrPacketHdr = 1  // NFULA_PACKET_HDR
	attrTimestamp = 3  // NFULA_TIMESTAMP
	attrIfOut     = 5  // NFULA_IFINDEX_OUTDEV
	attrPayload   = 9  // NFULA_PAYLOAD
	attrPrefix    = 10 // NFULA_PREFIX
	attrUID       = 11 // NFULA_UID
	attrGID       = 14 // NFULA_GID

	cfgAttrCmd  = 1 // NFULA_CFG_CMD
	cfgAttrMode = 2 // NFULA_CFG_MODE

	cmdBind   = 1 // NFULNL_CFG_CMD_BIND
	cmdUnbind = 2 // NFULNL_CFG_CMD_UNBIND

	copyPacket = 2 // NFULNL_COPY_PACKET
)

// Packet is one logged packet.
type Packet struct {
	Time     time.Time // kernel timestamp, or receive time when the kernel gave none
	Proto    uint16    // hardware protocol (ETH_P_IP, ETH_P_IPV6), host order
	Prefix   string
	OutIf    uint32
	UID, GID uint32
	HasUID   bool // false when the packet had no socket owner
	Payload  []byte

	// Parsed from Payload (IPv4 or IPv6 followed by TCP).
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	TCP              bool
}

// Conn is a netlink socket bound to one NFLOG group.
type Conn struct {
	c     *netlink.Conn
	group uint16
}

// Open binds NFLOG group in the current network namespace and asks for
// copyRange bytes of each packet (the IP and TCP headers fit in 128).
// Only one socket may bind a group: a second gets an error.
func Open(group uint16, copyRange uint32) (*Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog: netlink socket: %w", err)
	}
	_ = c.SetReadBuffer(4 << 20)
	n := &Conn{c: c, group: group}
	// No NFULNL_CFG_CMD_PF_BIND: kernels before 3.17 needed it before a
	// group would receive packets, but on every kernel it also makes
	// nfnetlink_log the network namespace's default packet logger for the
	// family (/proc/sys/net/netfilter/nf_log/N; what conntrack's invalid
	// packet logging and other users of the default logger write to), and
	// it stays so after we exit. A reader must not change the host's
	// netfilter configuration.
	if err := n.config(unix.AF_UNSPEC, group, []netlink.Attribute{{Type: cfgAttrCmd, Data: []byte{cmdBind}}}); err != nil {
		c.Close()
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM) {
			// The kernel answers EPERM when another socket holds the
			// group (and when we lack CAP_NET_ADMIN).
			return nil, fmt.Errorf("nflog: bind group %d: already bound by another process, or no CAP_NET_ADMIN: %w", group, err)
		}
		return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
	}
	// struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = copyPacket
	if err := n.config(unix.AF_UNSPEC, group, []netlink.Attribute{{Type: cfgAttrMode, Data: mode}}); err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: set copy mode on group %d: %w", group, err)
	}
	return n, nil
}

// config sends one NFULNL_MSG_CONFIG with the nfgenmsg header
// {family, version NFNETLINK_V0, res_id = group (big endian)}.
func (n *Conn) config(family uint8, group uint16, attrs []netlink.Attribute) error {
	ad, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	hdr := []byte{family, 0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], group)
	_, err = n.c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(subsysULOG<<8 | msgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(hdr, ad...),
	})
	return err
}

// Close unbinds the group and closes the socket.
func (n *Conn) Close() error {
	_ = n.config(unix.AF_UNSPEC, n.group, []netlink.Attribute{{Type: cfgAttrCmd, Data: []byte{cmdUnbind}}})
	return n.c.Close()
}

// Read calls fn for every logged packet until ctx ends or the socket fails.
// Messages lost because the socket buffer overflowed (ENOBUFS) are
// reported through lost and reading goes on.
func (n *Conn) Read(ctx context.Context, fn func(Packet), lost func(error)) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = n.c.SetReadDeadline(time.Now())
		case <-done:
		}
	}()
	for {
		msgs, err := n.c.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, unix.ENOBUFS) {
				if lost != nil {
					lost(err)
				}
				continue
			}
			return fmt.Errorf("nflog: receive on group %d: %w", n.group, err)
		}
		now := time.Now()
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(subsysULOG<<8|msgPacket) {
				continue
			}
			p, err := ParseMessage(m.Data)
			if err != nil {
				continue
			}
			if p.Time.IsZero() {
				p.Time = now
			}
			fn(p)
		}
	}
}

// ParseMessage parses the body of an NFULNL_MSG_PACKET message: the
// 4-byte nfgenmsg header and the NFULA_* attributes.
func ParseMessage(b []byte) (Packet, error) {
	var p Packet
	if len(b) < 4 {
		return p, errors.New("nflog: short message")
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return p, fmt.Errorf("nflog: attributes: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		data := ad.Bytes()
		switch ad.Type() {
		case attrPacketHdr:
			// struct nfulnl_msg_packet_hdr { __be16 hw_protocol; __u8 hook; __u8 _pad; }
			if len(data) >= 2 {
				p.Proto = binary.BigEndian.Uint16(data)
			}
		case attrTimestamp:
			// struct nfulnl_msg_packet_timestamp { __aligned_be64 sec; __aligned_be64 usec; }
			if len(data) >= 16 {
				sec := binary.BigEndian.Uint64(data)
				usec := binary.BigEndian.Uint64(data[8:])
				p.Time = time.Unix(int64(sec), int64(usec)*1000)
			}
		case attrIfOut:
			if len(data) >= 4 {
				p.OutIf = binary.BigEndian.Uint32(data)
			}
		case attrPrefix:
			p.Prefix = string(trimNUL(data))
		case attrUID:
			if len(data) >= 4 {
				p.UID = binary.BigEndian.Uint32(data)
				p.HasUID = true
			}
		case attrGID:
			if len(data) >= 4 {
				p.GID = binary.BigEndian.Uint32(data)
			}
		case attrPayload:
			p.Payload = append([]byte(nil), data...)
		}
	}
	if err := ad.Err(); err != nil {
		return p, fmt.Errorf("nflog: attributes: %w", err)
	}
	p.parsePayload()
	return p, nil
}

func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// parsePayload reads addresses and TCP ports from the network header
// (RFC 791 section 3.1, RFC 8200 section 3; TCP ports: RFC 9293 section 3.1).
// IPv6 extension headers before TCP are skipped for the common kinds.
func (p *Packet) parsePayload() {
	b := p.Payload
	if len(b) < 1 {
		return
	}
	var proto byte
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return
		}
		ihl := int(b[0]&0x0f) * 4
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		proto = b[9]
		if ihl < 20 || len(b) < ihl {
			return
		}
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		proto = b[6]
		l4 = b[40:]
		// Skip hop-by-hop (0), routing (43) and destination options (60).
		for i := 0; i < 8 && (proto == 0 || proto == 43 || proto == 60); i++ {
			if len(l4) < 8 || len(l4) < (int(l4[1])+1)*8 {
				return
			}
			proto, l4 = l4[0], l4[(int(l4[1])+1)*8:]
		}
	default:
		return
	}
	if proto == unix.IPPROTO_TCP && len(l4) >= 4 {
		p.TCP = true
		p.SrcPort = binary.BigEndian.Uint16(l4)
		p.DstPort = binary.BigEndian.Uint16(l4[2:])
	}
}
