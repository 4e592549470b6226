package actions

import (
	"fmt"
	"sort"

	"regflow/engine"
)

func sortedFields(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// didYouMean returns ` Did you mean "x"?` for the candidate closest to
// name, or "".
func didYouMean(name string, candidates []string) string {
	if s := engine.Suggest(name, candidates); s != "" {
		return fmt.Sprintf(" Did you mean %q?", s)
	}
	return ""
}
