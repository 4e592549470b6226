package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"regflow/engine"
)

func cmdDead(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dead", "dead list | dead replay ID|PIPELINE/ID...|--all  [--config DIR] [--amqp-url URL]", stderr)
	config := fs.String("config", "pipelines", "the pipeline configuration (for the broker and the store)")
	url := fs.String("amqp-url", "", "broker URL (default: $REGFLOW_AMQP_URL, then broker.url)")
	all := fs.Bool("all", false, "replay every dead letter")
	asJSON := fs.Bool("json", false, "list as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 || (pos[0] != "list" && pos[0] != "replay") {
		fmt.Fprintln(stderr, "regflow dead: say list or replay")
		fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig([]string{*config}, stderr)
	if err != nil {
		return err
	}
	conn, err := engine.Dial(amqpURL(*url, cfg.Broker.URL), "dead")
	if err != nil {
		return err
	}
	defer conn.Close()

	if pos[0] == "list" {
		dead, err := engine.ListDead(conn, cfg)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(dead)
		}
		if len(dead) == 0 {
			fmt.Fprintf(stdout, "the dead-letter queue %s is empty\n", cfg.Broker.QueuePrefix+cfg.Broker.DeadLetter)
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PIPELINE/ID\tTIME\tSTEP\tROUTING KEY\tREASON")
		for _, d := range dead {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(d.Ref()), printable(d.Time), printable(orDash(d.Step)),
				printable(d.RoutingKey), printable(oneLine(d.Reason, 100)))
		}
		return tw.Flush()
	}

	ids := pos[1:]
	if len(ids) == 0 && !*all {
		fmt.Fprintln(stderr, "regflow dead replay: name what to replay (ID or PIPELINE/ID, as dead list shows), or --all")
		return errUsage
	}
	// The journal must be the one regflow run uses, or the failed steps
	// would fail again from it.
	root, _ := os.Getwd()
	path := (&engine.Services{Root: root}).Path(cfg.Store.Path)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no store at %s; run regflow dead replay in the directory regflow run runs in", path)
	}
	store, err := engine.OpenStore(path)
	if err != nil {
		return err
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	replayed, err := engine.ReplayDead(ctx, conn, cfg, store, ids, *all)
	for _, id := range replayed {
		fmt.Fprintln(stdout, "replayed", printable(id))
	}
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
