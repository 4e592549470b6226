package engine

import "testing"

// topicCases are RabbitMQ's topic-matching rules, from field case C20 and
// the edges around them. The integration test checks the same table
// against a live broker.
var topicCases = []struct {
	pattern, key string
	match        bool
}{
	{"request.#", "request", true},
	{"a.#.b", "a.b", true},
	{"a.#.b", "ab", false},
	{"a.*.c.#", "a.b.c", true},
	{"request.*", "request.ana.lima", false},
	{"request.*", "request.", true},
	{"#", "", true},
	{"request.*", "request.ana%2Elima", true},
	{"request.*", "request", false},
	{"*", "", false},
	{"", "", true},
	{"", "a", false},
	{"*", "a.b", false},
	{"#", "a.b.c", true},
	{"#.c", "c", true},
	{"#.c", "a.b.c", true},
	{"#.c", "a.b.cc", false},
	{"a.#.#.b", "a.b", true},
	{"a.#.#.b", "a.x.y.b", true},
	{"a.*.#", "a", false},
	{"a.*.#", "a.b", true},
	{"completed.*", "Completed.x", false},
	{"a.b", "a.b", true},
	{"a.b", "a.b.", false},
}

func TestTopicMatch(t *testing.T) {
	for _, c := range topicCases {
		if got := TopicMatch(c.pattern, c.key); got != c.match {
			t.Errorf("TopicMatch(%q, %q) = %v, want %v", c.pattern, c.key, got, c.match)
		}
	}
}
