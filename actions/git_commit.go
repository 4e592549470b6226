package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"regflow/engine"
	"regflow/internal/dirlock"
)

// GitCommit writes a rendered file into a git repository and commits it,
// optionally pushing. The repository is created when missing. A file whose
// content is already committed makes no new commit.
var GitCommit = &engine.ActionSpec{
	Name:    "git_commit",
	Summary: "Write a rendered file into a git repository and commit it; optionally push.",
	Attrs: []engine.AttrSpec{
		{Name: "repo", Kind: engine.AttrString, Required: true,
			Doc: "Repository directory, created with git init when missing.", Example: `repo = "var/users"`},
		{Name: "path", Kind: engine.AttrTemplate, Required: true,
			Doc:     "File inside the repository. It must stay inside: no .., no absolute path, no .git component.",
			Example: `path = "users/{{ msg.username }}.json"`},
		{Name: "content", Kind: engine.AttrTemplate, Default: "the message as indented JSON",
			Doc: "What the file holds. The default leaves out success and errmsg, which describe " +
				"the run rather than the record."},
		{Name: "message", Kind: engine.AttrTemplate, Default: `"Update <path>"`,
			Doc: "Commit message, kept exactly as rendered when the commit holds this record alone. " +
				"Records committed together make one commit: its subject is the first record's " +
				"message with \"and N more\", its body every record's message."},
		{Name: "author", Kind: engine.AttrString, Default: `"regflow <regflow@localhost>"`,
			Doc: "Author and committer of the commits."},
		{Name: "push", Kind: engine.AttrBool, Default: "false",
			Doc: "Push after committing; a rejected push is rebased and tried again."},
		{Name: "remote", Kind: engine.AttrString, Default: `"origin"`, Doc: "Remote to push to."},
		{Name: "branch", Kind: engine.AttrString, Default: `"main"`, Doc: "Branch to commit on and push."},
	},
	Idempotent: true,
	New:        newGitCommit,
}

type gitCommit struct {
	repo    string
	path    *engine.Template
	content *engine.Template
	message *engine.Template
	name    string
	email   string
	push    bool
	remote  string
	branch  string
}

func newGitCommit(c *engine.StepConfig) (engine.Action, error) {
	g := &gitCommit{
		repo:    c.String("repo", ""),
		path:    c.Template("path"),
		content: c.Template("content"),
		message: c.Template("message"),
		push:    c.Bool("push", false),
		remote:  c.String("remote", "origin"),
		branch:  c.String("branch", "main"),
	}
	author := c.String("author", "regflow <regflow@localhost>")
	a, err := mail.ParseAddress(author)
	if err != nil || a.Name == "" {
		return nil, c.Errorf("author", "Invalid author", "author must look like \"Name <address>\", not %q.", author)
	}
	g.name, g.email = a.Name, a.Address
	if g.repo == "" {
		return nil, c.Errorf("repo", "Empty repo", "Name the repository directory.")
	}
	return g, nil
}

// repoLocks serializes the steps that touch one repository in this
// process; git's own index.lock guards against other processes.
var repoLocks sync.Map // path → *sync.Mutex

func lockRepo(dir string) func() {
	m, _ := repoLocks.LoadOrStore(dir, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// recordOf is the message as a record: without the fields that say how
// the run went.
func recordOf(m engine.Message) engine.Message {
	if _, ok := m["success"]; !ok {
		if _, ok := m["errmsg"]; !ok {
			return m
		}
	}
	rec := make(engine.Message, len(m))
	for k, v := range m {
		if k != "success" && k != "errmsg" {
			rec[k] = v
		}
	}
	return rec
}

// SafeRelPath checks that p names a file inside a repository: relative,
// without "..", not in .git, without control characters.
func SafeRelPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("path rendered empty")
	}
	if _, bad := controlChar(p, false); bad {
		return "", fmt.Errorf("path %q contains a control character", p)
	}
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("path %q leaves the repository", p)
	}
	clean := filepath.Clean(p)
	for _, part := range strings.Split(filepath.ToSlash(clean), "/") {
		// git refuses a .git anywhere in a path: a clone would fail on it.
		if strings.EqualFold(part, ".git") {
			return "", fmt.Errorf("path %q has a .git component", p)
		}
	}
	if strings.HasSuffix(p, "/") {
		return "", fmt.Errorf("path %q names a directory", p)
	}
	return clean, nil
}

// noSymlinkOnPath refuses a path whose directories or file, as they are in
// the checkout at root, include a symbolic link: writing through it could
// land outside the repository, and committing under it would turn the
// link into a directory.
func noSymlinkOnPath(root, rel string) error {
	at := root
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		at = filepath.Join(at, part)
		fi, err := os.Lstat(at)
		if err != nil {
			return nil // what does not exist yet is created as a directory or file
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("path %q passes through the symbolic link %s; records are written only inside the repository",
				rel, strings.TrimPrefix(at, root+string(filepath.Separator)))
		}
	}
	return nil
}

func (g *gitCommit) Run(ctx context.Context, c *engine.Call) error {
	rel, err := c.Render(g.path)
	if err != nil {
		return err
	}
	if rel, err = SafeRelPath(rel); err != nil {
		return engine.Permanent(err)
	}
	var content []byte
	if g.content != nil {
		s, err := c.Render(g.content)
		if err != nil {
			return err
		}
		content = []byte(s)
	} else {
		content, err = json.MarshalIndent(recordOf(c.Msg), "", "  ")
		if err != nil {
			return engine.Permanent(fmt.Errorf("encode record: %w", err))
		}
		content = append(content, '\n')
	}
	msg := "Update " + rel
	if g.message != nil {
		if msg, err = c.Render(g.message); err != nil {
			return err
		}
	}

	if err := noSymlinkOnPath(c.Svc.Path(g.repo), rel); err != nil {
		return engine.Permanent(err)
	}
	res := committerFor(c.Svc.Path(g.repo), g, c.Svc.Sandbox).commit(ctx, c.Log, record{rel, content, msg})
	switch {
	case res.err != nil:
		return res.err
	case res.unchanged:
		c.Notef("already committed: %s", rel)
	case res.others > 0:
		c.Notef("committed %s as %s, with %d other records", rel, res.hash, res.others)
	default:
		c.Notef("committed %s as %s", rel, res.hash)
	}
	if g.push && c.Svc.Sandbox {
		c.Notef("%s; push skipped in the sandbox", c.Note())
	}
	return nil
}

// record is one file a step commits.
type record struct {
	rel     string
	content []byte
	msg     string
}

type commitResult struct {
	hash      string
	others    int  // records that went into the same commit
	unchanged bool // the file was committed already
	err       error
}

type commitRequest struct {
	record
	log  *slog.Logger
	done chan commitResult
}

// committer makes the commits of one repository. Records that arrive
// while a commit is being made go into the next commit together, whose
// message holds every record's own message; a record that arrives alone
// is committed with its message exactly. A burst of registrations thus
// costs a few git runs instead of a few per user, and the history still
// says which commit added which user.
type committer struct {
	g       *gitCommit
	repo    *gitRepo
	sandbox bool
	store   *gitStore // opened on first use; only the committing goroutine touches it

	mu      sync.Mutex
	pending []*commitRequest // guarded by mu
	running bool             // a goroutine is committing; guarded by mu
}

// committers holds a committer per repository and configuration.
var committers sync.Map

func committerFor(dir string, g *gitCommit, sandbox bool) *committer {
	key := strings.Join([]string{dir, g.name, g.email, g.branch, g.remote, strconv.FormatBool(g.push),
		strconv.FormatBool(sandbox)}, "\x00")
	if c, ok := committers.Load(key); ok {
		return c.(*committer)
	}
	c, _ := committers.LoadOrStore(key, &committer{g: g, repo: &gitRepo{dir: dir, env: g.env()}, sandbox: sandbox})
	return c.(*committer)
}

// commit queues rec and waits for the commit that includes it.
func (cm *committer) commit(ctx context.Context, log *slog.Logger, rec record) commitResult {
	req := &commitRequest{record: rec, log: log, done: make(chan commitResult, 1)}
	cm.mu.Lock()
	cm.pending = append(cm.pending, req)
	if !cm.running {
		cm.running = true
		go cm.loop()
	}
	cm.mu.Unlock()
	select {
	case res := <-req.done:
		return res
	case <-ctx.Done():
		return commitResult{err: engine.Transient(fmt.Errorf("git commit: %w", ctx.Err()))}
	}
}

func (cm *committer) loop() {
	for {
		cm.mu.Lock()
		batch := cm.pending
		cm.pending = nil
		if len(batch) == 0 {
			cm.running = false
			cm.mu.Unlock()
			return
		}
		cm.mu.Unlock()
		cm.run(batch)
	}
}

// gitStore opens the repository in-process, once.
func (cm *committer) gitStore(log *slog.Logger) (*gitStore, error) {
	if cm.store == nil {
		gs, err := openGitStore(cm.repo.dir)
		if err != nil {
			return nil, err
		}
		if !gs.bare {
			if err := clearOwnLock(gs.gitDir, log); err != nil {
				return nil, err
			}
		}
		if err := gs.findLagging(cm.g.branch); err != nil {
			return nil, engine.Transient(fmt.Errorf("compare the index with %s: %w", cm.g.branch, err))
		}
		if gs.rebuilt != "" {
			log.Warn("git checkout repaired", "repo", cm.repo.dir, "what", gs.rebuilt)
			gs.rebuilt = ""
		}
		cm.store = gs
	}
	return cm.store, nil
}

// run makes one commit of a batch of records.
func (cm *committer) run(batch []*commitRequest) {
	finish := func(res func(*commitRequest) commitResult) {
		for _, req := range batch {
			req.done <- res(req)
		}
	}
	failAll := func(err error) { finish(func(*commitRequest) commitResult { return commitResult{err: err} }) }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	unlock := lockRepo(cm.repo.dir)
	defer unlock()
	r := cm.repo
	// Another regflow process may commit to the same repository: the
	// directory lock serializes them, and the system releases it when a
	// process dies.
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		failAll(engine.Permanent(fmt.Errorf("create repository: %w", err)))
		return
	}
	dl, err := dirlock.Acquire(r.dir)
	if err != nil {
		failAll(engine.Transient(fmt.Errorf("lock repository: %w", err)))
		return
	}
	defer dl.Unlock()
	if err := r.ensure(ctx, cm.g.branch); err != nil {
		failAll(err)
		return
	}
	gs, err := cm.gitStore(batch[0].log)
	if err != nil {
		failAll(err)
		return
	}
	if err := r.clearStaleLock(batch[0].log); err != nil {
		failAll(err)
		return
	}
	// git's own lock says another git process is at work in the checkout.
	if !gs.bare {
		if _, err := os.Stat(filepath.Join(gs.gitDir, "index.lock")); err == nil {
			failAll(engine.Transient(errors.New("commit: the repository is locked by another git process (.git/index.lock exists)")))
			return
		}
	}
	recs := make([]record, len(batch))
	for i, req := range batch {
		recs[i] = req.record
		if gs.bare {
			continue
		}
		// The blob in git is the record; the checkout's copy is for
		// people, so it is written in place rather than through a
		// temporary file, which costs a rename per record.
		if err := writeFile(filepath.Join(r.dir, req.rel), req.content); err != nil {
			failAll(engine.Transient(fmt.Errorf("write %s: %w", req.rel, err)))
			return
		}
	}
	sig := object.Signature{Name: cm.g.name, Email: cm.g.email, When: time.Now()}
	hash, changed, err := gs.commit(recs, cm.g.branch, sig, func(todo []record) string {
		msgs := make([]string, len(todo))
		for i, t := range todo {
			msgs[i] = t.msg
		}
		return GroupMessage(msgs)
	})
	if err != nil {
		cm.store = nil // reopen: the error may have left the cache behind
		failAll(err)
		return
	}
	changedCount := len(changed)
	// The index follows the commit before the steps have their answer, so
	// that git run in the checkout right after sees the commit complete.
	// A failure leaves it lagging, for the next commit to catch up.
	if err := gs.syncIndex(); err != nil {
		batch[0].log.Warn("the checkout's index lags behind the commits; trying again with the next commit",
			"repo", r.dir, "error", err.Error())
	}
	if cm.g.push && !cm.sandbox {
		if err := cm.push(ctx, r); err != nil {
			failAll(err)
			return
		}
	}
	finish(func(req *commitRequest) commitResult {
		if !changed[req.rel] {
			return commitResult{unchanged: true}
		}
		return commitResult{hash: hash, others: changedCount - 1}
	})
}

// GroupMessage is the message of a commit of several records: the first
// record's subject with a count, then every record's message. A single
// record's message is kept exactly.
func GroupMessage(msgs []string) string {
	if len(msgs) == 1 {
		return msgs[0]
	}
	subject, _, _ := strings.Cut(msgs[0], "\n")
	var b strings.Builder
	fmt.Fprintf(&b, "%s and %d more\n", subject, len(msgs)-1)
	for _, m := range msgs {
		b.WriteString("\n" + strings.TrimRight(m, "\n") + "\n")
	}
	return b.String()
}

func (g *gitCommit) env() []string {
	return append(os.Environ(),
		"GIT_AUTHOR_NAME="+g.name, "GIT_AUTHOR_EMAIL="+g.email,
		"GIT_COMMITTER_NAME="+g.name, "GIT_COMMITTER_EMAIL="+g.email,
		"GIT_TERMINAL_PROMPT=0", "LC_ALL=C", "GIT_LITERAL_PATHSPECS=1",
	)
}

// push pushes the branch, rebasing onto the remote and trying again when
// another writer pushed first.
func (cm *committer) push(ctx context.Context, r *gitRepo) error {
	g := cm.g
	var err error
	for try := 1; try <= 3; try++ {
		if _, err = r.git(ctx, nil, "push", "--quiet", g.remote, "HEAD:refs/heads/"+g.branch); err == nil {
			return nil
		}
		if _, perr := r.git(ctx, nil, "pull", "--quiet", "--rebase", g.remote, g.branch); perr != nil {
			r.git(ctx, nil, "rebase", "--abort")
			return perr
		}
	}
	return engine.Transient(fmt.Errorf("push to %s: %w", g.remote, err))
}

type gitRepo struct {
	dir string
	env []string
}

// git runs one git command in the repository. A held index.lock is
// transient (another git process is at work); any other failure is
// permanent and carries git's own message.
func (r *gitRepo) git(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", r.dir}, args...)...)
	cmd.Env = r.env
	// Ask git to stop with SIGTERM, on which it removes its lock files;
	// SIGKILL would leave index.lock behind and lock out every later
	// commit. Only a git that ignores SIGTERM is killed, after WaitDelay.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		return out, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(args) > 0 && args[0] == "diff" && ee.ExitCode() == 1 {
		return out, errDiffers
	}
	msg := strings.TrimSpace(stderr.String())
	switch {
	case ctx.Err() != nil:
		return nil, engine.Transient(fmt.Errorf("git %s: %w", args[0], ctx.Err()))
	case strings.Contains(msg, "index.lock") || strings.Contains(msg, ".lock': File exists"):
		return nil, engine.Transient(fmt.Errorf("git %s: the repository is locked by another git process", args[0]))
	case errors.Is(err, exec.ErrNotFound):
		return nil, engine.Permanent(errors.New("git is not installed"))
	}
	if msg == "" {
		msg = err.Error()
	}
	return nil, engine.Permanent(fmt.Errorf("git %s: %s", args[0], firstLine(msg)))
}

var errDiffers = errors.New("differs")

// staleLock is how old an index.lock must be before regflow takes it for
// the leftover of a git process that died (killed, or its machine lost
// power) rather than the mark of one at work.
const staleLock = 2 * time.Minute

// clearStaleLock removes an index.lock older than staleLock. Within this
// process the repository lock serializes git, so a lock file is another
// process's, alive or dead.
func (r *gitRepo) clearStaleLock(log *slog.Logger) error {
	lock := filepath.Join(r.dir, ".git", "index.lock")
	st, err := os.Stat(lock)
	if err != nil || time.Since(st.ModTime()) < staleLock {
		return nil
	}
	log.Warn("removing a stale git lock", "path", lock, "age", time.Since(st.ModTime()).Round(time.Second).String())
	if err := os.Remove(lock); err != nil && !os.IsNotExist(err) {
		return engine.Permanent(fmt.Errorf("remove stale %s: %w", lock, err))
	}
	return nil
}

// ensure creates the repository when it does not exist yet.
func (r *gitRepo) ensure(ctx context.Context, branch string) error {
	for _, marker := range []string{".git", "HEAD"} { // a checkout, or a bare repository
		if _, err := os.Stat(filepath.Join(r.dir, marker)); err == nil {
			return nil
		}
	}
	_, err := r.git(ctx, nil, "init", "--quiet", "--initial-branch="+branch)
	return err
}

// writeFile writes a record into the checkout. A symbolic link is refused
// and a file with another name elsewhere (a hard link) is replaced rather
// than written through, so the write stays inside the repository.
func writeFile(path string, data []byte) error {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link", path)
		}
		if sharedFile(fi) {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	err := writeNoFollow(path, data)
	if !os.IsNotExist(err) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeNoFollow(path, data)
}

func writeNoFollow(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
