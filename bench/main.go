// Command bench measures regflow against the broker's own ceiling on this
// machine: make bench. It needs a RabbitMQ on localhost (make bench starts
// one) and prints a table and bench/results.json.
//
//	ceiling      a minimal amqp091-go forwarder: consume with manual acks,
//	             publish each message on, persistent and confirmed, ack
//	passthrough  regflow running a one-step pipeline (publish) on the same load
//	workflow     the shipped pipelines end to end, with outbox mail and git
//	simulate     the shipped pipelines in-process, without a broker
//	memory       regflow's resident memory, idle and at its peak in the workflow
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"regflow/actions"
	"regflow/engine"
)

// Results are the figures of one run, as bench/results.json holds them.
type Results struct {
	CeilingMsgsPerS     float64 `json:"ceiling_msgs_per_s"`
	PassthroughMsgsPerS float64 `json:"passthrough_msgs_per_s"`
	PassthroughRatio    float64 `json:"passthrough_ratio"`
	WorkflowRegsPerS    float64 `json:"workflow_regs_per_s"`
	WorkflowP50Ms       float64 `json:"workflow_p50_ms"`
	WorkflowP99Ms       float64 `json:"workflow_p99_ms"`
	SimulateMsgsPerS    float64 `json:"simulate_msgs_per_s"`
	SimulateEngine      float64 `json:"simulate_engine_msgs_per_s"`
	RSSPeakMB           float64 `json:"rss_peak_mb"`
	RSSIdleMB           float64 `json:"rss_idle_mb"`

	// How the figures were taken.
	Messages      int     `json:"messages"`
	Registrations int     `json:"registrations"`
	LightRate     int     `json:"light_rate_per_s"`
	LightCount    int     `json:"light_registrations"`
	Prefetch      int     `json:"prefetch"`
	NotifyRegsPS  float64 `json:"workflow_notified_regs_per_s"`
	When          string  `json:"when"`
}

var (
	amqpURL  = flag.String("amqp-url", envOr("REGFLOW_AMQP_URL", "amqp://guest:guest@localhost:5672/"), "broker")
	messages = flag.Int("messages", 20000, "messages for the ceiling and passthrough runs")
	regs     = flag.Int("registrations", 2000, "registrations for the workflow's throughput run")
	rate     = flag.Int("light-rate", 20, "registrations per second for the latency run")
	light    = flag.Int("light-count", 200, "registrations in the latency run")
	prefetch = flag.Int("prefetch", 64, "prefetch of the forwarder and of regflow's pipelines")
	out      = flag.String("o", "bench/results.json", "where to write the results")
	bin      = flag.String("regflow", "", "regflow binary (default: build one)")
	profiles = flag.String("profiles", "", "write CPU profiles of regflow's runs into this directory")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	tmp, err := os.MkdirTemp("", "regflow-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if *bin == "" {
		*bin = filepath.Join(tmp, "regflow")
		if out, err := exec.Command("go", "build", "-o", *bin, "./cmd/regflow").CombinedOutput(); err != nil {
			return fmt.Errorf("build regflow: %v\n%s", err, out)
		}
	}
	conn, err := amqp.Dial(*amqpURL)
	if err != nil {
		return fmt.Errorf("RabbitMQ is not reachable at %s (%w); make bench starts it", engine.RedactURL(*amqpURL), err)
	}
	defer conn.Close()
	r := &Results{Messages: *messages, Registrations: *regs, LightRate: *rate, LightCount: *light,
		Prefetch: *prefetch, When: time.Now().UTC().Format(time.RFC3339)}

	step := func(name string, f func() error) error {
		fmt.Fprintf(os.Stderr, "bench: %s…\n", name)
		return f()
	}
	if err := step("ceiling", func() error { return ceiling(conn, r) }); err != nil {
		return err
	}
	if err := step("passthrough", func() error { return passthrough(conn, tmp, r) }); err != nil {
		return err
	}
	if err := step("workflow", func() error { return workflow(conn, tmp, r) }); err != nil {
		return err
	}
	if err := step("simulate", func() error { return simulate(tmp, r) }); err != nil {
		return err
	}
	if r.CeilingMsgsPerS > 0 {
		r.PassthroughRatio = r.PassthroughMsgsPerS / r.CeilingMsgsPerS
	}
	printTable(r)
	data, _ := json.MarshalIndent(r, "", "  ")
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(*out, append(data, '\n'), 0o644)
}

func printTable(r *Results) {
	rows := [][3]string{
		{"ceiling", fmt.Sprintf("%.0f msgs/s", r.CeilingMsgsPerS), "amqp091-go forwarder, one hop, confirms, persistent"},
		{"passthrough", fmt.Sprintf("%.0f msgs/s", r.PassthroughMsgsPerS), fmt.Sprintf("regflow, one publish step; %.2f × ceiling", r.PassthroughRatio)},
		{"workflow", fmt.Sprintf("%.0f regs/s", r.WorkflowRegsPerS), fmt.Sprintf("%d registrations, request → completed (notify: %.0f regs/s)", r.Registrations, r.NotifyRegsPS)},
		{"workflow p50", fmt.Sprintf("%.1f ms", r.WorkflowP50Ms), fmt.Sprintf("request → completed at %d registrations/s", r.LightRate)},
		{"workflow p99", fmt.Sprintf("%.1f ms", r.WorkflowP99Ms), ""},
		{"simulate", fmt.Sprintf("%.0f msgs/s", r.SimulateMsgsPerS), "pipelines/ in-process, no broker, effects in a sandbox"},
		{"  engine only", fmt.Sprintf("%.0f msgs/s", r.SimulateEngine), "the same with git, mail, log and exec steps stubbed"},
		{"rss idle", fmt.Sprintf("%.1f MB", r.RSSIdleMB), "regflow run, consuming, no load"},
		{"rss peak", fmt.Sprintf("%.1f MB", r.RSSPeakMB), "regflow run, during the workflow runs"},
	}
	fmt.Printf("%-14s %-14s %s\n", "measure", "value", "what")
	for _, row := range rows {
		fmt.Printf("%-14s %-14s %s\n", row[0], row[1], row[2])
	}
}

// fill publishes n persistent messages on exchange with confirms, keyed by
// key(i) with body body(i).
func fill(conn *amqp.Connection, exchange string, n int, key func(int) string, body func(int) []byte) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return err
	}
	var pending []*amqp.DeferredConfirmation
	for i := 0; i < n; i++ {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), exchange, key(i), false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: body(i),
				MessageId: strconv.Itoa(i)})
		if err != nil {
			return err
		}
		pending = append(pending, dc)
		if len(pending) == 1000 {
			for _, p := range pending {
				p.Wait()
			}
			pending = pending[:0]
		}
	}
	for _, p := range pending {
		p.Wait()
	}
	return nil
}

// waitDepth waits until queue q holds n messages and returns when it did.
func waitDepth(conn *amqp.Connection, q string, n int, timeout time.Duration) (time.Time, error) {
	ch, err := conn.Channel()
	if err != nil {
		return time.Time{}, err
	}
	defer ch.Close()
	deadline := time.Now().Add(timeout)
	for {
		info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			return time.Time{}, err
		}
		if info.Messages >= n {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s holds %d of %d messages after %s", q, info.Messages, n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func declareQueue(ch *amqp.Channel, name, exchange, pattern string) error {
	ch.QueueDelete(name, false, false, false)
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		return err
	}
	if exchange != "" {
		return ch.QueueBind(name, pattern, exchange, false, nil)
	}
	return nil
}

// ceiling forwards a pre-filled queue into another with a minimal
// forwarder: what one consume-and-republish hop costs on this broker.
func ceiling(conn *amqp.Connection, r *Results) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	in, outQ := "bench.ceiling.in", "bench.ceiling.out"
	for _, q := range []string{in, outQ} {
		if err := declareQueue(ch, q, "", ""); err != nil {
			return err
		}
	}
	defer ch.QueueDelete(in, false, false, false)
	defer ch.QueueDelete(outQ, false, false, false)
	n := *messages
	body := []byte(`{"username":"ana.lima","queuename":"ana%2Elima","email":"ana.lima@example.org","fullname":"Ana Lima"}`)
	if err := fill(conn, "", n, func(int) string { return in }, func(int) []byte { return body }); err != nil {
		return err
	}

	cons, _ := conn.Channel()
	defer cons.Close()
	pub, _ := conn.Channel()
	defer pub.Close()
	cons.Qos(*prefetch, 0, false)
	pub.Confirm(false)
	deliveries, err := cons.Consume(in, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		d := <-deliveries
		dc, err := pub.PublishWithDeferredConfirmWithContext(context.Background(), "", outQ, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: d.ContentType, MessageId: d.MessageId, Body: d.Body})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func(d amqp.Delivery) {
			defer wg.Done()
			if dc.Wait() {
				d.Ack(false)
			}
		}(d)
	}
	wg.Wait()
	r.CeilingMsgsPerS = float64(n) / time.Since(start).Seconds()
	return nil
}

// regflowProc is a regflow run on a configuration of the bench's own.
type regflowProc struct {
	cmd    *exec.Cmd
	health string
}

func freeAddr() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

func startRegflow(dir string, env []string, paths ...string) (*regflowProc, error) {
	p := &regflowProc{health: freeAddr()}
	args := append([]string{"run"}, paths...)
	args = append(args, "--health-addr", p.health, "--log-level", "warn")
	if *profiles != "" {
		args = append(args, "--pprof")
	}
	p.cmd = exec.Command(*bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	logf, _ := os.Create(filepath.Join(dir, "regflow.log"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + p.health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 300 {
			p.stop()
			log, _ := os.ReadFile(filepath.Join(dir, "regflow.log"))
			return nil, fmt.Errorf("regflow did not become ready:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, nil
}

// rssKB reads a field such as VmRSS or VmHWM of the process, in kB.
func (p *regflowProc) rssKB(field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// profile records a CPU profile of regflow until the returned function is
// called, when -profiles names a directory.
func (p *regflowProc) profile(name string) func() {
	if *profiles == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get("http://" + p.health + "/debug/pprof/profile?seconds=8")
		if err != nil {
			return
		}
		defer resp.Body.Close()
		os.MkdirAll(*profiles, 0o755)
		f, err := os.Create(filepath.Join(*profiles, name+".pprof"))
		if err != nil {
			return
		}
		defer f.Close()
		f.ReadFrom(resp.Body)
	}()
	return func() { <-done }
}

func (p *regflowProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
}

// passthrough runs regflow with one publish step on the same load as
// the ceiling.
func passthrough(conn *amqp.Connection, tmp string, r *Results) error {
	dir := filepath.Join(tmp, "passthrough")
	os.MkdirAll(dir, 0o755)
	cfg := fmt.Sprintf(`
broker {
  exchange = "bench.pass"
  prefetch = %d
}
message { n = number }
pipeline "bench_pass" {
  on = ["in.*"]
  publish "out" { routing_key = "out.x" }
}
`, *prefetch)
	os.WriteFile(filepath.Join(dir, "pass.hcl"), []byte(cfg), 0o644)
	ch, _ := conn.Channel()
	defer ch.Close()
	ch.ExchangeDeclare("bench.pass", "topic", true, false, false, false, nil)
	defer ch.ExchangeDelete("bench.pass", false, false)
	defer ch.ExchangeDelete("bench.pass.dead", false, false)
	if err := declareQueue(ch, "bench_pass", "bench.pass", "in.*"); err != nil {
		return err
	}
	if err := declareQueue(ch, "bench.pass.out", "bench.pass", "out.*"); err != nil {
		return err
	}
	defer ch.QueueDelete("bench_pass", false, false, false)
	defer ch.QueueDelete("bench.pass.out", false, false, false)
	defer ch.QueueDelete("bench.pass.dead", false, false, false)
	n := *messages
	if err := fill(conn, "bench.pass", n, func(int) string { return "in.x" },
		func(i int) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, i)) }); err != nil {
		return err
	}
	start := time.Now()
	p, err := startRegflow(dir, nil, filepath.Join(dir, "pass.hcl"))
	if err != nil {
		return err
	}
	defer p.stop()
	ready := time.Since(start)
	stopProfile := p.profile("passthrough")
	done, err := waitDepth(conn, "bench.pass.out", n, 3*time.Minute)
	stopProfile()
	if err != nil {
		return err
	}
	r.PassthroughMsgsPerS = float64(n) / (done.Sub(start) - ready).Seconds()
	return nil
}

// workflow runs the shipped pipelines: a burst of registrations for
// throughput, then a steady light load for latency.
func workflow(conn *amqp.Connection, tmp string, r *Results) error {
	dir := filepath.Join(tmp, "workflow")
	os.MkdirAll(dir, 0o755)
	id := fmt.Sprintf("b%d", time.Now().UnixNano()%1e9)
	exchange := "RegUsr-" + id
	ch, _ := conn.Channel()
	defer ch.Close()
	ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil)
	for q, key := range map[string]string{id + ".bench.completed": "completed.*", id + ".bench.notified": "notify.*"} {
		if err := declareQueue(ch, q, exchange, key); err != nil {
			return err
		}
	}
	defer func() {
		for _, q := range []string{"get_next_uid_gid", "provision", "notify", "event_log", "bench.completed",
			"bench.notified", "RegUsr-" + id + ".dead"} {
			ch.QueueDelete(id+"."+q, false, false, false)
		}
		ch.ExchangeDelete(exchange, false, false)
		ch.ExchangeDelete(exchange+".dead", false, false)
	}()
	pipelines, _ := filepath.Abs("pipelines")
	// The shipped pipelines read their broker settings from the
	// environment; prefetch is left at the shipped default.
	p, err := startRegflow(dir, []string{"REGFLOW_EXCHANGE=" + exchange, "REGFLOW_QUEUE_PREFIX=" + id + ".",
		"REGFLOW_AMQP_URL=" + *amqpURL, "REGFLOW_SMTP_URL="}, pipelines)
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(time.Second)
	r.RSSIdleMB = float64(p.rssKB("VmRSS")) / 1024

	// Throughput: every registration at once.
	n := *regs
	stopProfile := p.profile("workflow")
	start := time.Now()
	if err := fill(conn, exchange, n, func(i int) string { return fmt.Sprintf("request.u%05d", i) },
		func(i int) []byte { return registration(fmt.Sprintf("u%05d", i)) }); err != nil {
		return err
	}
	done, err := waitDepth(conn, id+".bench.completed", n, 3*time.Minute)
	if err != nil {
		return err
	}
	r.WorkflowRegsPerS = float64(n) / done.Sub(start).Seconds()
	notified, err := waitDepth(conn, id+".bench.notified", n, 3*time.Minute)
	if err != nil {
		return err
	}
	r.NotifyRegsPS = float64(n) / notified.Sub(start).Seconds()
	stopProfile()
	ch.QueuePurge(id+".bench.completed", false)

	// Latency at a light, steady load.
	stopProfile = p.profile("light")
	defer stopProfile()
	lat, err := latencies(conn, exchange, id+".bench.completed", *light, *rate)
	if err != nil {
		return err
	}
	r.WorkflowP50Ms, r.WorkflowP99Ms = percentile(lat, 50), percentile(lat, 99)
	r.RSSPeakMB = float64(p.rssKB("VmHWM")) / 1024
	return nil
}

func registration(user string) []byte {
	b, _ := json.Marshal(map[string]string{"username": user, "queuename": user, "email": user + "@example.org",
		"fullname": "Bench User " + user, "reason": "benchmark"})
	return b
}

// latencies publishes n registrations at rate per second and returns each
// one's time from publish to its completed.<q>.
func latencies(conn *amqp.Connection, exchange, completed string, n, rate int) ([]time.Duration, error) {
	cons, _ := conn.Channel()
	defer cons.Close()
	deliveries, err := cons.Consume(completed, "", true, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	got := make(chan struct{})
	go func() {
		for d := range deliveries {
			u := strings.TrimPrefix(d.RoutingKey, "completed.")
			mu.Lock()
			if t, ok := sent[u]; ok {
				lat = append(lat, time.Since(t))
				delete(sent, u)
			}
			k := len(lat)
			mu.Unlock()
			if k == n {
				close(got)
				return
			}
		}
	}()
	pub, _ := conn.Channel()
	defer pub.Close()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		u := fmt.Sprintf("l%05d", i)
		mu.Lock()
		sent[u] = time.Now()
		mu.Unlock()
		if err := pub.PublishWithContext(context.Background(), exchange, "request."+u, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: registration(u),
				MessageId: u}); err != nil {
			return nil, err
		}
	}
	select {
	case <-got:
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("only %d of %d light-load registrations completed", len(lat), n)
	}
	return lat, nil
}

func percentile(d []time.Duration, p int) float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := (len(d)*p + 99) / 100
	if i > 0 {
		i--
	}
	return float64(d[i]) / float64(time.Millisecond)
}

// simulate runs registrations through pipelines/ in-process for a few
// seconds and counts the messages handled (every hop a message takes):
// once as regflow simulate does, with every effect in a sandbox, and once
// with the steps that touch files stubbed, which is what the engine itself
// costs.
func simulate(tmp string, r *Results) error {
	cfg, _, diags := engine.Load([]string{"pipelines"}, actions.Registry())
	if diags.HasErrors() {
		return diags
	}
	run := func(dir string, stubbed bool) (float64, error) {
		svc, err := engine.Sandbox(cfg, filepath.Join(tmp, dir), nil, slog.New(slog.DiscardHandler))
		if err != nil {
			return 0, err
		}
		defer svc.Store.Close()
		sim := engine.NewSimulator(cfg, svc)
		if stubbed {
			sim.StubActions("git_commit", "send_email", "subscribe_list", "log_event", "exec")
		}
		start := time.Now()
		hops := 0
		for i := 0; time.Since(start) < 4*time.Second; i++ {
			u := fmt.Sprintf("s%06d", i)
			tr, err := sim.Run(context.Background(), "request."+u, registration(u), u)
			if err != nil {
				return 0, err
			}
			hops += len(tr.Hops)
		}
		return float64(hops) / time.Since(start).Seconds(), nil
	}
	var err error
	if r.SimulateMsgsPerS, err = run("simulate", false); err != nil {
		return err
	}
	r.SimulateEngine, err = run("simulate-stubbed", true)
	return err
}
