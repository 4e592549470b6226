package engine

import "github.com/agext/levenshtein"

// synonyms maps names people bring from other tools to regflow's name.
var synonyms = map[string]string{
	"condition":  "when",
	"if":         "when",
	"only_if":    "when",
	"filter":     "when",
	"on_fail":    "on_failure",
	"on_err":     "on_error",
	"routingkey": "routing_key",
	"key":        "routing_key",
	"topic":      "routing_key",
	"bindings":   "on",
	"binding":    "on",
	"patterns":   "on",
	"recipients": "to",
	"argv":       "command",
	"cmd":        "command",
	"int":        "integer",
	"int64":      "integer",
	"uint":       "integer",
	"str":        "string",
	"text":       "string",
	"boolean":    "bool",
	"float":      "number",
	"double":     "number",
	"array":      "list",
	"map":        "object",
}

// Suggest returns the candidate closest to name, or "" when none is close
// enough to be a likely misspelling. A misspelt synonym from another tool
// ("condtion" for "condition") suggests regflow's name ("when") when that
// name is a candidate.
func Suggest(name string, candidates []string) string {
	if target, ok := synonyms[name]; ok {
		for _, c := range candidates {
			if c == target {
				return target
			}
		}
	}
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := levenshtein.Distance(name, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best != "" {
		return best
	}
	for _, syn := range sortedKeys(synonyms) {
		target := synonyms[syn]
		if levenshtein.Distance(name, syn, nil) >= 3 {
			continue
		}
		for _, c := range candidates {
			if c == target {
				return target
			}
		}
	}
	return ""
}
