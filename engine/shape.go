package engine

import "strings"

// keyShape is a routing-key template seen before any message exists: its
// words are literal, or dynamic where an expression renders into them.
type keyShape []shapeWord

type shapeWord struct {
	text    string // the literal text of the word, expressions left out
	dynamic bool
}

// shapeOf splits a template into words at the dots of its literal text;
// dots inside {{ }} expressions do not split.
func shapeOf(t *Template) keyShape {
	var s keyShape
	cur := shapeWord{}
	for _, p := range t.parts {
		if p.prog != nil {
			cur.dynamic = true
			continue
		}
		for _, r := range p.text {
			if r == '.' {
				s = append(s, cur)
				cur = shapeWord{}
				continue
			}
			cur.text += string(r)
		}
	}
	return append(s, cur)
}

// pattern writes the shape as a binding pattern, a dynamic word as "*".
func (s keyShape) pattern() string {
	w := make([]string, len(s))
	for i, x := range s {
		w[i] = x.text
		if x.dynamic {
			w[i] = "*"
		}
	}
	return strings.Join(w, ".")
}

// mayMatch reports whether some rendering of the shape could match the
// binding pattern: a dynamic word may be any single word.
func (s keyShape) mayMatch(pattern string) bool {
	return matchShape(words(pattern), s)
}

func matchShape(pat []string, key keyShape) bool {
	return matchPattern(pat, key, func(p string, w shapeWord) bool { return w.dynamic || w.text == p })
}
