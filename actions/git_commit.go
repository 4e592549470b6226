package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"regflow/engine"
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
			Doc:     "File inside the repository. It must stay inside: no .., no absolute path, not under .git.",
			Example: `path = "users/{{ msg.username }}.json"`},
		{Name: "content", Kind: engine.AttrTemplate, Default: "the message as indented JSON",
			Doc: "What the file holds."},
		{Name: "message", Kind: engine.AttrTemplate, Default: `"Update <path>"`,
			Doc: "Commit message, kept exactly as rendered."},
		{Name: "author", Kind: engine.AttrString, Default: `"regflow <regflow@localhost>"`,
			Doc: "Author and committer of the commits."},
		{Name: "push", Kind: engine.AttrBool, Default: "false",
			Doc: "Push after committing; a rejected push is rebased and tried again."},
		{Name: "remote", Kind: engine.AttrString, Default: `"origin"`, Doc: "Remote to push to."},
		{Name: "branch", Kind: engine.AttrString, Default: `"main"`, Doc: "Branch to commit on and push."},
	},
	New: newGitCommit,
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
	first := strings.SplitN(filepath.ToSlash(clean), "/", 2)[0]
	if strings.EqualFold(first, ".git") {
		return "", fmt.Errorf("path %q is inside .git", p)
	}
	if strings.HasSuffix(p, "/") {
		return "", fmt.Errorf("path %q names a directory", p)
	}
	return clean, nil
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
		content, err = json.MarshalIndent(c.Msg, "", "  ")
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

	dir := c.Svc.Path(g.repo)
	unlock := lockRepo(dir)
	defer unlock()
	r := &gitRepo{dir: dir, env: g.env()}
	if err := r.ensure(ctx, g.branch); err != nil {
		return err
	}
	if err := r.clearStaleLock(c); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, rel), content); err != nil {
		return engine.Transient(fmt.Errorf("write %s: %w", rel, err))
	}
	if _, err := r.git(ctx, nil, "add", "--", rel); err != nil {
		return err
	}
	if _, err := r.git(ctx, nil, "diff", "--cached", "--quiet", "--", rel); err == nil {
		c.Notef("already committed: %s", rel)
		return g.maybePush(ctx, c, r)
	}
	if _, err := r.git(ctx, []byte(msg), "commit", "--quiet", "--no-verify", "--cleanup=verbatim",
		"--file=-", "--", rel); err != nil {
		return err
	}
	head, err := r.git(ctx, nil, "rev-parse", "--short", "HEAD")
	if err != nil {
		return err
	}
	c.Notef("committed %s as %s", rel, strings.TrimSpace(string(head)))
	return g.maybePush(ctx, c, r)
}

// env is git's environment. Literal pathspecs keep a rendered path such
// as ":!x" or ":(glob)**" from being read as pathspec magic, which would
// add and commit every other file in the work tree.
func (g *gitCommit) env() []string {
	return append(os.Environ(),
		"GIT_AUTHOR_NAME="+g.name, "GIT_AUTHOR_EMAIL="+g.email,
		"GIT_COMMITTER_NAME="+g.name, "GIT_COMMITTER_EMAIL="+g.email,
		"GIT_TERMINAL_PROMPT=0", "LC_ALL=C", "GIT_LITERAL_PATHSPECS=1",
	)
}

// maybePush pushes the branch, rebasing onto the remote and trying again
// when another writer pushed first.
func (g *gitCommit) maybePush(ctx context.Context, c *engine.Call, r *gitRepo) error {
	if !g.push {
		return nil
	}
	if c.Svc.Sandbox {
		c.Notef("%s; push skipped in the sandbox", c.Note())
		return nil
	}
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
func (r *gitRepo) clearStaleLock(c *engine.Call) error {
	lock := filepath.Join(r.dir, ".git", "index.lock")
	st, err := os.Stat(lock)
	if err != nil || time.Since(st.ModTime()) < staleLock {
		return nil
	}
	c.Log.Warn("removing a stale git lock", "path", lock, "age", time.Since(st.ModTime()).Round(time.Second).String())
	if err := os.Remove(lock); err != nil && !os.IsNotExist(err) {
		return engine.Permanent(fmt.Errorf("remove stale %s: %w", lock, err))
	}
	return nil
}

// ensure creates the repository when it does not exist yet.
func (r *gitRepo) ensure(ctx context.Context, branch string) error {
	if _, err := os.Stat(filepath.Join(r.dir, ".git")); err == nil {
		return nil
	}
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		return engine.Permanent(fmt.Errorf("create repository: %w", err))
	}
	_, err := r.git(ctx, nil, "init", "--quiet", "--initial-branch="+branch)
	return err
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".regflow-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
