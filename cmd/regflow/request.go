package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"

	"regflow/engine"
)

func cmdRequest(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("request", "request USER --email E --fullname F [--reason R] [flags]", stderr)
	email := fs.String("email", "", "the user's email address (required)")
	fullname := fs.String("fullname", "", "the user's full name (required)")
	reason := fs.String("reason", "", "why the account is needed")
	timeout := fs.Duration("timeout", engine.DefaultRequestTimeout, "how long to wait for completed.<q>")
	asJSON := fs.Bool("json", false, "print only the completed message, as one line of JSON")
	url := fs.String("amqp-url", "", "broker URL (default: $REGFLOW_AMQP_URL, then "+engine.DefaultAMQPURL+")")
	exchange := fs.String("exchange", "", "the registration exchange (default: $REGFLOW_EXCHANGE, then RegUsr)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *exchange == "" {
		*exchange = envOr("REGFLOW_EXCHANGE", engine.DefaultExchange)
	}
	var missing []string
	switch {
	case len(pos) == 0:
		missing = append(missing, "the USER to register")
	case len(pos) > 1:
		fmt.Fprintf(stderr, "regflow request: one USER at a time; got %s\n", strings.Join(pos, ", "))
		return errUsage
	case pos[0] == "":
		fmt.Fprintln(stderr, "regflow request: USER must be non-empty")
		return errUsage
	}
	if *email == "" {
		missing = append(missing, "--email")
	}
	if *fullname == "" {
		missing = append(missing, "--fullname")
	}
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "regflow request: missing %s\n", strings.Join(missing, " and "))
		fs.Usage()
		return errUsage
	}
	username := pos[0]
	msg := engine.Message{
		"username":  username,
		"queuename": engine.QueueName(username),
		"email":     *email,
		"fullname":  *fullname,
		"reason":    *reason,
	}
	if u, err := user.Current(); err == nil {
		msg["updated_by"] = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		msg["host"] = h
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	reply, err := engine.Request(ctx, amqpURL(*url, engine.DefaultAMQPURL), *exchange, msg)
	if errors.Is(err, engine.ErrTimeout) {
		fmt.Fprintf(stderr, "regflow request: no completed.%s within %s\n", msg["queuename"], *timeout)
		return exitError{2}
	}
	if err != nil {
		return err
	}

	ok, _ := reply[engine.FieldSuccess].(bool)
	if *asJSON {
		b, _ := json.Marshal(reply)
		fmt.Fprintln(stdout, string(b))
	} else {
		if ok {
			fmt.Fprintf(stdout, "registration of %s succeeded: uid %v, gid %v\n", username, reply["uid"], reply["gid"])
		} else {
			fmt.Fprintf(stdout, "registration of %s failed:\n", username)
			for _, e := range errmsgs(reply) {
				fmt.Fprintf(stdout, "  - %s\n", e)
			}
		}
		b, _ := json.MarshalIndent(reply, "", "  ")
		fmt.Fprintf(stdout, "completed.%s:\n%s\n", msg["queuename"], b)
	}
	if !ok {
		return exitError{1}
	}
	return nil
}

func errmsgs(m engine.Message) []string {
	list, _ := m[engine.FieldErrmsg].([]any)
	var out []string
	for _, e := range list {
		out = append(out, strings.TrimSpace(fmt.Sprint(e)))
	}
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
