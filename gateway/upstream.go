package gateway

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
)

// ParseAddrs splits a comma-separated list of host:port addresses, such as
// the value of PRESENCE or FRIENDS, and checks each.
func ParseAddrs(list string) ([]string, error) {
	var addrs []string
	for a := range strings.SplitSeq(list, ",") {
		a = strings.TrimSpace(a)
		if err := validateAddr(a); err != nil {
			return nil, err
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q has no port between 1 and 65535", addr)
	}
	return nil
}

// replicas holds a client for each replica of an upstream service. Calls
// about one user go to the replica picked by hashing the user's name, and
// on to the next replica on each retry, so that one user's streams share a
// replica while it works and move when it does not.
type replicas[C any] struct {
	addrs   []string
	clients []C
}

func newReplicas[C any](addrs []string, newClient func(baseURL string) C) (*replicas[C], error) {
	if len(addrs) == 0 {
		return nil, errors.New("no address")
	}
	r := &replicas[C]{addrs: addrs}
	for _, a := range addrs {
		if err := validateAddr(a); err != nil {
			return nil, err
		}
		r.clients = append(r.clients, newClient("http://"+a))
	}
	return r, nil
}

// pick returns the client for the attempt-th try of a call about key, and
// the replica's address.
func (r *replicas[C]) pick(key string, attempt int) (C, string) {
	h := fnv.New32a()
	h.Write([]byte(key))
	i := (int(h.Sum32()%uint32(len(r.clients))) + attempt) % len(r.clients)
	return r.clients[i], r.addrs[i]
}

// newH2CClient returns an HTTP client that speaks HTTP/2 without TLS, as
// gRPC upstreams on a private network do, and notices dead connections by
// pinging them when idle.
func newH2CClient() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:   &protocols,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     10 * time.Second,
		},
	}}
}

// publicError returns the error to show a caller for a failed upstream
// call: an error the upstream sent passes through unchanged, and any other
// keeps its code but not its message, which names internal addresses.
func publicError(service string, err error) error {
	if connect.IsWireError(err) {
		return err
	}
	code := connect.CodeOf(err)
	if code == connect.CodeUnknown {
		code = connect.CodeUnavailable
	}
	return connect.NewError(code, fmt.Errorf("%s service unavailable", service))
}
