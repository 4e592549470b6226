package engine

import (
	"strings"
	"testing"
)

func TestQueueName(t *testing.T) {
	cases := map[string]string{
		"ana.lima": "ana%2Elima",
		"a_b-c":    "a_b-c",
		"*":        "%2A",
		"a#b":      "a%23b",
		"50%":      "50%25",
		"José":     "Jos%C3%A9",
		"ana lima": "ana%20lima",
	}
	for in, want := range cases {
		if got := QueueName(in); got != want {
			t.Errorf("QueueName(%q) = %q, want %q", in, got, want)
		}
		if err := CheckWord(QueueName(in)); err != nil {
			t.Errorf("QueueName(%q) = %q is not one routing-key word: %v", in, QueueName(in), err)
		}
	}
}

func TestCheckRoutingKey(t *testing.T) {
	cases := []struct {
		key, err string
	}{
		{"completed.ana%2Elima", ""},
		{"completed.", "empty word at position 2"},
		{".x", "empty word at position 1"},
		{"a..b", "empty word at position 2"},
		{"request.*", `wildcard "*"`},
		{"request.#", `wildcard "#"`},
		{"x." + strings.Repeat("a", 254), "AMQP allows at most 255"},
	}
	for _, c := range cases {
		err := CheckRoutingKey(c.key)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("CheckRoutingKey(%q) = %v, want nil", c.key, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("CheckRoutingKey(%q) = %v, want an error containing %q", c.key, err, c.err)
		}
	}
}

func TestCheckWord(t *testing.T) {
	if err := CheckWord(""); err == nil || err.Error() != "must be non-empty" {
		t.Errorf(`CheckWord("") = %v, want "must be non-empty"`, err)
	}
	if err := CheckWord("ana.lima"); err == nil || !strings.Contains(err.Error(), "%2E") {
		t.Errorf(`CheckWord("ana.lima") = %v, want a hint to encode "." as %%2E`, err)
	}
}
