package engine

import (
	"fmt"
	"strings"
)

// MaxRoutingKey is the longest routing key AMQP 0-9-1 can carry, in bytes.
const MaxRoutingKey = 255

// QueueName returns the form of a user name that is safe as one word of a
// routing key: every byte outside A-Z, a-z, 0-9, "_" and "-" is written as
// "%XX", so "ana.lima" becomes "ana%2Elima". Dots would otherwise split the
// name into several words and "*" or "#" would act as wildcards.
func QueueName(username string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(username); i++ {
		c := username[i]
		if c != '%' && isWordByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '%'
}

// CheckRoutingKey reports why key cannot be published: it is longer than
// AMQP allows, or one of its words is empty or a wildcard. A key regflow
// renders from a template must pass it, so that a missing field never
// turns "completed.{{ msg.queuename }}" into "completed.".
func CheckRoutingKey(key string) error {
	if len(key) > MaxRoutingKey {
		return fmt.Errorf("routing key is %d bytes long; AMQP allows at most %d", len(key), MaxRoutingKey)
	}
	for i, w := range strings.Split(key, ".") {
		switch w {
		case "":
			return fmt.Errorf("routing key %q has an empty word at position %d", key, i+1)
		case "*", "#":
			return fmt.Errorf("routing key %q has the wildcard %q as a word", key, w)
		}
	}
	return nil
}

// CheckWord reports why s cannot be one word of a routing key.
func CheckWord(s string) error {
	if s == "" {
		return fmt.Errorf("must be non-empty")
	}
	if len(s) > MaxRoutingKey {
		return fmt.Errorf("is %d bytes long; a routing key holds at most %d", len(s), MaxRoutingKey)
	}
	for i := 0; i < len(s); i++ {
		if !isWordByte(s[i]) {
			return fmt.Errorf("has %q at byte %d; encode it as %%%02X", s[i], i+1, s[i])
		}
	}
	return nil
}
