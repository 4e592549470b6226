package engine

import (
	"fmt"
	"io"
	"strings"
)

// routeGraph is the routing picture of a configuration: binding patterns,
// the pipelines and consumers they feed, each pipeline's steps, the keys
// publish steps send and the patterns those keys reach.
type routeGraph struct {
	cfg      *Config
	patterns []string            // distinct binding patterns, in order of appearance
	keys     []string            // distinct published key templates
	keyShape map[string]keyShape // by template source
	keyFrom  map[string][]string // key → step node ids publishing it
}

func newRouteGraph(cfg *Config) *routeGraph {
	g := &routeGraph{cfg: cfg, keyShape: map[string]keyShape{}, keyFrom: map[string][]string{}}
	addPat := func(pats []string) {
		for _, p := range pats {
			if !contains(g.patterns, p) {
				g.patterns = append(g.patterns, p)
			}
		}
	}
	for pi, p := range cfg.Pipelines {
		addPat(p.On)
		for si, s := range p.allSteps() {
			pa, ok := s.Impl.(PublishingAction)
			if !ok {
				continue
			}
			k := pa.RoutingKey()
			if pa.Exchange() != cfg.Broker.Exchange {
				continue
			}
			if _, seen := g.keyShape[k.Source]; !seen {
				g.keys = append(g.keys, k.Source)
				g.keyShape[k.Source] = shapeOf(k)
			}
			g.keyFrom[k.Source] = append(g.keyFrom[k.Source], stepID(pi, si))
		}
	}
	for _, c := range cfg.Consumers {
		addPat(c.On)
	}
	return g
}

// allSteps returns the steps and then the on_failure steps.
func (p *Pipeline) allSteps() []*Step {
	return append(append([]*Step{}, p.Steps...), p.OnFailure...)
}

func stepID(pi, si int) string { return fmt.Sprintf("p%ds%d", pi, si) }

func (g *routeGraph) patID(p string) string {
	for i, q := range g.patterns {
		if q == p {
			return fmt.Sprintf("on%d", i)
		}
	}
	return ""
}

func (g *routeGraph) keyID(k string) string {
	for i, q := range g.keys {
		if q == k {
			return fmt.Sprintf("key%d", i)
		}
	}
	return ""
}

// reaches lists the patterns key may match. The catch-all "#" is left
// out: every key reaches it, and drawing that hides the rest.
func (g *routeGraph) reaches(key string) []string {
	var out []string
	for _, p := range g.patterns {
		if p != "#" && g.keyShape[key].mayMatch(p) {
			out = append(out, p)
		}
	}
	return out
}

func mermaidText(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, "#quot;") + `"`
}

// WriteMermaid writes the routing picture as a Mermaid flowchart.
func WriteMermaid(w io.Writer, cfg *Config) {
	g := newRouteGraph(cfg)
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for i, p := range g.patterns {
		fmt.Fprintf(&b, "  on%d([%s])\n", i, mermaidText(p))
	}
	for pi, p := range cfg.Pipelines {
		fmt.Fprintf(&b, "  subgraph p%d [%s]\n    direction TB\n", pi, mermaidText("pipeline "+p.Name))
		for si, s := range p.Steps {
			fmt.Fprintf(&b, "    %s[%s]\n", stepID(pi, si), mermaidText(s.Action+" "+s.Name))
			if si > 0 {
				fmt.Fprintf(&b, "    %s --> %s\n", stepID(pi, si-1), stepID(pi, si))
			}
		}
		for fi, s := range p.OnFailure {
			si := len(p.Steps) + fi
			fmt.Fprintf(&b, "    %s[%s]\n", stepID(pi, si), mermaidText("on_failure: "+s.Action+" "+s.Name))
			if fi > 0 {
				fmt.Fprintf(&b, "    %s --> %s\n", stepID(pi, si-1), stepID(pi, si))
			}
		}
		b.WriteString("  end\n")
		for _, pat := range p.On {
			fmt.Fprintf(&b, "  %s --> p%d\n", g.patID(pat), pi)
		}
	}
	for ci, c := range cfg.Consumers {
		fmt.Fprintf(&b, "  c%d[/%s/]\n", ci, mermaidText(c.Name+" (outside regflow)"))
		for _, pat := range c.On {
			fmt.Fprintf(&b, "  %s --> c%d\n", g.patID(pat), ci)
		}
	}
	for _, k := range g.keys {
		fmt.Fprintf(&b, "  %s>%s]\n", g.keyID(k), mermaidText(k))
		for _, from := range g.keyFrom[k] {
			fmt.Fprintf(&b, "  %s -.-> %s\n", from, g.keyID(k))
		}
		for _, pat := range g.reaches(k) {
			fmt.Fprintf(&b, "  %s --> %s\n", g.keyID(k), g.patID(pat))
		}
	}
	io.WriteString(w, b.String())
}

func dotText(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// WriteDOT writes the routing picture as a Graphviz digraph.
func WriteDOT(w io.Writer, cfg *Config) {
	g := newRouteGraph(cfg)
	var b strings.Builder
	b.WriteString("digraph regflow {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n")
	for i, p := range g.patterns {
		fmt.Fprintf(&b, "  on%d [label=%s, shape=oval];\n", i, dotText(p))
	}
	for pi, p := range cfg.Pipelines {
		fmt.Fprintf(&b, "  subgraph cluster_p%d {\n    label=%s;\n", pi, dotText("pipeline "+p.Name))
		for si, s := range p.allSteps() {
			label := s.Action + " " + s.Name
			if si >= len(p.Steps) {
				label = "on_failure: " + label
			}
			fmt.Fprintf(&b, "    %s [label=%s, shape=box];\n", stepID(pi, si), dotText(label))
			if si > 0 && si != len(p.Steps) {
				fmt.Fprintf(&b, "    %s -> %s;\n", stepID(pi, si-1), stepID(pi, si))
			}
		}
		b.WriteString("  }\n")
		for _, pat := range p.On {
			if len(p.Steps) > 0 {
				fmt.Fprintf(&b, "  %s -> %s;\n", g.patID(pat), stepID(pi, 0))
			}
		}
	}
	for ci, c := range cfg.Consumers {
		fmt.Fprintf(&b, "  c%d [label=%s, shape=parallelogram];\n", ci, dotText(c.Name+" (outside regflow)"))
		for _, pat := range c.On {
			fmt.Fprintf(&b, "  %s -> c%d;\n", g.patID(pat), ci)
		}
	}
	for _, k := range g.keys {
		fmt.Fprintf(&b, "  %s [label=%s, shape=note];\n", g.keyID(k), dotText(k))
		for _, from := range g.keyFrom[k] {
			fmt.Fprintf(&b, "  %s -> %s [style=dashed];\n", from, g.keyID(k))
		}
		for _, pat := range g.reaches(k) {
			fmt.Fprintf(&b, "  %s -> %s;\n", g.keyID(k), g.patID(pat))
		}
	}
	b.WriteString("}\n")
	io.WriteString(w, b.String())
}
