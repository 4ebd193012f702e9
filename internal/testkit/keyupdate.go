package testkit

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
)

// KeyUpdater writes, on a TLS 1.3 client's socket, what crypto/tls's client
// cannot be made to send: KeyUpdate messages that request the peer's own
// (RFC 8446 section 4.6.3), with application data between them, as a
// hostile device would. It is keyed from the client's
// CLIENT_TRAFFIC_SECRET_0 (tls.Config.KeyLogWriter) and takes over the
// client's writing: the tls.Conn must write nothing more, though it can
// still read (it follows the peer's KeyUpdates itself). The records are
// sealed with the standard library's AES-GCM and HKDF.
type KeyUpdater struct {
	hash   func() hash.Hash
	keyLen int
	secret []byte
	aead   cipher.AEAD
	iv     []byte
	seq    uint64
}

// NewKeyUpdater keys a KeyUpdater from the key log of a finished TLS 1.3
// handshake whose cipher suite is suite (the AES-GCM suites only).
func NewKeyUpdater(keyLog []byte, suite uint16) (*KeyUpdater, error) {
	k := &KeyUpdater{}
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		k.hash, k.keyLen = sha256.New, 16
	case tls.TLS_AES_256_GCM_SHA384:
		k.hash, k.keyLen = sha512.New384, 32
	default:
		return nil, fmt.Errorf("testkit: KeyUpdater has no cipher suite %s", tls.CipherSuiteName(suite))
	}
	for line := range bytes.Lines(keyLog) {
		if f := bytes.Fields(line); len(f) == 3 && string(f[0]) == "CLIENT_TRAFFIC_SECRET_0" {
			secret, err := hex.DecodeString(string(f[2]))
			if err != nil {
				return nil, fmt.Errorf("testkit: key log: %w", err)
			}
			return k, k.setSecret(secret)
		}
	}
	return nil, fmt.Errorf("testkit: no CLIENT_TRAFFIC_SECRET_0 in the key log")
}

// expandLabel is HKDF-Expand-Label with an empty context (RFC 8446 7.1).
func (k *KeyUpdater) expandLabel(secret []byte, label string, length int) ([]byte, error) {
	full := "tls13 " + label
	info := []byte{byte(length >> 8), byte(length), byte(len(full))}
	info = append(append(info, full...), 0)
	return hkdf.Expand(k.hash, secret, string(info), length)
}

func (k *KeyUpdater) setSecret(secret []byte) error {
	key, err := k.expandLabel(secret, "key", k.keyLen)
	if err != nil {
		return err
	}
	if k.iv, err = k.expandLabel(secret, "iv", 12); err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return err
	}
	k.secret, k.seq = secret, 0
	return nil
}

// record appends a sealed record of content type typ (RFC 8446 5.2).
func (k *KeyUpdater) record(dst []byte, typ byte, payload []byte) []byte {
	inner := append(append(make([]byte, 0, len(payload)+1), payload...), typ)
	n := len(inner) + k.aead.Overhead()
	hdr := []byte{23, 3, 3, byte(n >> 8), byte(n)}
	nonce := bytes.Clone(k.iv)
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], k.seq)
	for i, b := range seq {
		nonce[4+i] ^= b
	}
	k.seq++
	return k.aead.Seal(append(dst, hdr...), nonce, inner, hdr)
}

// KeyUpdate appends a KeyUpdate that requests the peer's, and moves to the
// client's next traffic secret.
func (k *KeyUpdater) KeyUpdate(dst []byte) []byte {
	dst = k.record(dst, 22, []byte{24, 0, 0, 1, 1}) // key_update, update_requested
	next, err := k.expandLabel(k.secret, "traffic upd", k.hash().Size())
	if err == nil {
		err = k.setSecret(next)
	}
	if err != nil {
		panic(err) // HKDF and AES-GCM take any key of these sizes
	}
	return dst
}

// Data appends an application data record carrying p.
func (k *KeyUpdater) Data(dst, p []byte) []byte { return k.record(dst, 23, p) }
