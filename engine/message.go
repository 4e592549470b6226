package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// DecodeMessage parses a message body, which must be one JSON object.
// Numbers are normalized (see Normalize). The error says what is wrong in
// words an operator can act on.
func DecodeMessage(body []byte) (Message, error) {
	var msg Message
	if err := decodeObject(body, &msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func decodeObject(body []byte, msg *Message) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return errors.New("body is empty; expected a JSON object")
	}
	if !utf8.Valid(trimmed) {
		return fmt.Errorf("body is not valid UTF-8")
	}
	if trimmed[0] != '{' {
		return fmt.Errorf("body is not a JSON object (starts with %q)", truncate(string(trimmed), 20))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("body is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("body has data after the JSON object")
	}
	for k, v := range m {
		m[k] = Normalize(v)
	}
	*msg = m
	return nil
}

// MessageIdentity is the identity of a delivery for the journal: the AMQP
// message id when the producer set one, else a digest of routing key and
// body, so that the same message delivered twice has the same identity.
func MessageIdentity(messageID, key string, body []byte) string {
	if messageID != "" {
		return messageID
	}
	h := sha256.New()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(body)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:40]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
