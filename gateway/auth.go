package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
)

// MaxNameLen is the longest user name, in bytes.
const MaxNameLen = 64

// MinSecretLen is the shortest token secret accepted, in bytes.
const MinSecretLen = 32

// ValidateName reports why name is not a valid user name, or nil when it is:
// 1 to [MaxNameLen] bytes of valid UTF-8 without control characters or '/'.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name is %d bytes long, more than %d", len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return errors.New("name is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return errors.New("name contains a control character")
		}
		if r == '/' {
			return errors.New("name contains '/'")
		}
	}
	return nil
}

// tokenVersion starts every token payload, so that the format can change.
const tokenVersion = 1

// tokenNonceLen is the length of the random part of a token, in bytes.
const tokenNonceLen = 16

// tokenHeaderLen is the length of a token payload before the user name.
const tokenHeaderLen = 1 + 8 + tokenNonceLen

// errTokenExpired is returned by verify for a well-formed token that is no
// longer accepted.
var errTokenExpired = errors.New("token expired")

// errTokenInvalid is returned by verify for a token that was not issued with
// this secret or was altered.
var errTokenInvalid = errors.New("token invalid")

// tokens issues and verifies bearer tokens. A token is the payload and its
// HMAC-SHA256, each base64url-encoded and joined by a dot; the payload is a
// version byte, the expiry in Unix seconds (8 bytes, big-endian), a random
// nonce and the user name.
type tokens struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// issue returns a token for user and the time it expires.
func (t *tokens) issue(user string) (string, time.Time, error) {
	expiry := t.now().Add(t.ttl).Truncate(time.Second)
	payload := make([]byte, tokenHeaderLen, tokenHeaderLen+len(user))
	payload[0] = tokenVersion
	binary.BigEndian.PutUint64(payload[1:9], uint64(expiry.Unix()))
	if _, err := rand.Read(payload[9:tokenHeaderLen]); err != nil {
		return "", time.Time{}, fmt.Errorf("read nonce: %w", err)
	}
	payload = append(payload, user...)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(t.mac(payload)), expiry, nil
}

// verify returns the user a token was issued for, or errTokenInvalid or
// errTokenExpired.
func (t *tokens) verify(token string) (string, error) {
	encPayload, encMAC, ok := strings.Cut(token, ".")
	if !ok {
		return "", errTokenInvalid
	}
	enc := base64.RawURLEncoding
	payload, err := enc.DecodeString(encPayload)
	if err != nil || len(payload) <= tokenHeaderLen || payload[0] != tokenVersion {
		return "", errTokenInvalid
	}
	mac, err := enc.DecodeString(encMAC)
	if err != nil || !hmac.Equal(mac, t.mac(payload)) {
		return "", errTokenInvalid
	}

	user := string(payload[tokenHeaderLen:])
	if ValidateName(user) != nil {
		return "", errTokenInvalid
	}
	expiry := binary.BigEndian.Uint64(payload[1:9])
	if expiry > uint64(1<<62) || !t.now().Before(time.Unix(int64(expiry), 0)) {
		return "", errTokenExpired
	}
	return user, nil
}

func (t *tokens) mac(payload []byte) []byte {
	h := hmac.New(sha256.New, t.secret)
	h.Write(payload)
	return h.Sum(nil)
}

// authenticate returns the user named by the bearer token in header, or an
// UNAUTHENTICATED error.
func (t *tokens) authenticate(header http.Header) (string, error) {
	value := header.Get("Authorization")
	scheme, token, ok := strings.Cut(value, " ")
	if value == "" {
		return "", connect.NewError(connect.CodeUnauthenticated,
			errors.New("missing bearer token"))
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.ContainsAny(token, " \t") {
		return "", connect.NewError(connect.CodeUnauthenticated,
			errors.New("authorization is not a bearer token"))
	}
	user, err := t.verify(token)
	if err != nil {
		return "", connect.NewError(connect.CodeUnauthenticated, err)
	}
	return user, nil
}

// authorize checks that the bearer token in header was issued for user: it
// returns an UNAUTHENTICATED error when there is no valid token, and a
// PERMISSION_DENIED error when the token is for another user.
func (t *tokens) authorize(header http.Header, user string) error {
	holder, err := t.authenticate(header)
	if err != nil {
		return err
	}
	if holder != user {
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("token is for another user than %q", user))
	}
	return nil
}
