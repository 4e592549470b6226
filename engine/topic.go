package engine

import "strings"

// TopicMatch reports whether routing key matches binding pattern with the
// semantics of a RabbitMQ topic exchange: words are separated by dots, "*"
// stands for exactly one word and "#" for zero or more words. The empty
// key has no words, so only "#" (or an empty pattern) matches it, while
// "request." has two, the second empty, so "request.*" matches it.
func TopicMatch(pattern, key string) bool {
	return matchWords(words(pattern), words(key))
}

func words(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

func matchWords(pat, key []string) bool {
	return matchPattern(pat, key, func(p, k string) bool { return p == k })
}

// matchPattern matches binding-pattern words against key words, where
// literal(p, k) says whether the literal pattern word p matches k. "*"
// takes one word, "#" any number.
func matchPattern[K any](pat []string, key []K, literal func(string, K) bool) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case "#":
			// Collapse runs of "#" and try every possible number of
			// swallowed words, shortest first.
			rest := pat[1:]
			for len(rest) > 0 && rest[0] == "#" {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(key); i++ {
				if matchPattern(rest, key[i:], literal) {
					return true
				}
			}
			return false
		case "*":
			if len(key) == 0 {
				return false
			}
		default:
			if len(key) == 0 || !literal(pat[0], key[0]) {
				return false
			}
		}
		pat, key = pat[1:], key[1:]
	}
	return len(key) == 0
}
