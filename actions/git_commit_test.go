package actions_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"regflow/actions"
	"regflow/engine"
)

const gitPipelines = `
pipeline "record" {
  on = ["verify.*"]
  git_commit "record" {
    repo    = "var/users"
    path    = "users/{{ msg.username }}.json"
    message = "Add user {{ msg.username }} ({{ msg.fullname }})"
  }
}

pipeline "raw" {
  on = ["verify.*"]
  git_commit "record" {
    repo    = "var/users"
    path    = "{{ msg.username }}"
    content = "{{ msg.fullname }}\n"
  }
}
`

// commitCount returns how many commits HEAD has.
func commitCount(t *testing.T, repo string) int {
	t.Helper()
	var n int
	fmt.Sscan(git(t, repo, "rev-list", "--count", "HEAD"), &n)
	return n
}

// commitMessage returns the message of the commit exactly as git stored
// it: everything after the blank line that ends the commit's headers.
func commitMessage(t *testing.T, repo, rev string) string {
	t.Helper()
	raw := gitRaw(t, repo, "cat-file", "commit", rev)
	_, msg, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		t.Fatalf("commit %s has no message: %q", rev, raw)
	}
	return string(msg)
}

func TestGitCommitCreatesRepository(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	repo := filepath.Join(e.root, "var/users")

	res := e.run("record", "verify.ana", request("ana", "fullname", "Ana Lima", "uid", 10001, "gid", 10001))
	st := wantOK(t, res, "record")

	if fi, err := os.Stat(filepath.Join(repo, ".git")); err != nil || !fi.IsDir() {
		t.Fatalf("no repository at %s: %v", repo, err)
	}
	if got := git(t, repo, "symbolic-ref", "--short", "HEAD"); got != "main" {
		t.Errorf("branch %q; want main", got)
	}
	const want = `{
  "email": "ana@example.org",
  "fullname": "Ana Lima",
  "gid": 10001,
  "queuename": "ana",
  "reason": "thesis",
  "uid": 10001,
  "username": "ana"
}
`
	if got := string(gitRaw(t, repo, "show", "HEAD:users/ana.json")); got != want {
		t.Errorf("committed content:\n%s\nwant:\n%s", got, want)
	}
	if got := commitMessage(t, repo, "HEAD"); got != "Add user ana (Ana Lima)" {
		t.Errorf("commit message %q", got)
	}
	if got := git(t, repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>"); got !=
		"regflow <regflow@localhost>|regflow <regflow@localhost>" {
		t.Errorf("author|committer = %q", got)
	}
	if want := "committed users/ana.json as " + git(t, repo, "rev-parse", "--short", "HEAD"); st.Note != want {
		t.Errorf("note %q; want %q", st.Note, want)
	}
	if got := git(t, repo, "status", "--porcelain", "--untracked-files=all"); got != "" {
		t.Errorf("working tree not clean after the commit:\n%s", got)
	}
}

// TestGitCommitMessageExact is C21: the commit message is the rendered
// template byte for byte, whatever the name holds; git runs without a
// shell, so nothing in it is interpreted.
func TestGitCommitMessageExact(t *testing.T) {
	tests := []struct {
		name     string
		message  string
		fullname string
		want     string
	}{
		{"quotes and angle brackets", "Add user {{ msg.username }} ({{ msg.fullname }})",
			`O'Brien "Ozzy" <admin>`, `Add user obrien (O'Brien "Ozzy" <admin>)`},
		{"shell syntax", "Add user {{ msg.username }} ({{ msg.fullname }})",
			"$(touch pwned); `id` && rm -rf .", "Add user obrien ($(touch pwned); `id` && rm -rf .)"},
		{"comment lines kept", "Add user {{ msg.username }}\n\n# {{ msg.fullname }}\n",
			"O'Brien", "Add user obrien\n\n# O'Brien\n"},
		{"surrounding space kept", "  Add user {{ msg.username }}  ", "x", "  Add user obrien  "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hermeticGit(t)
			e := newEnv(t, fmt.Sprintf(`
pipeline "record" {
  on = ["verify.*"]
  git_commit "record" {
    repo    = "users"
    path    = "{{ msg.username }}.json"
    message = %q
  }
}
`, tt.message))
			wantOK(t, e.run("record", "verify.obrien", request("obrien", "fullname", tt.fullname)), "record")
			repo := filepath.Join(e.root, "users")
			if got := commitMessage(t, repo, "HEAD"); got != tt.want {
				t.Errorf("commit message\n got %q\nwant %q", got, tt.want)
			}
			if _, err := os.Stat(filepath.Join(repo, "pwned")); err == nil {
				t.Errorf("a shell ran the name")
			}
		})
	}
}

// TestGitCommitAlreadyCommitted is C12: the same request again makes no
// new commit; a changed record does.
func TestGitCommitAlreadyCommitted(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	repo := filepath.Join(e.root, "var/users")
	steps := []struct {
		name        string
		fullname    string
		wantNote    string // a prefix
		wantCommits int
	}{
		{"first", "Ana Lima", "committed users/ana.json as ", 1},
		{"same again", "Ana Lima", "already committed: users/ana.json", 1},
		{"and again", "Ana Lima", "already committed: users/ana.json", 1},
		{"changed", "Ana Lima-Souza", "committed users/ana.json as ", 2},
	}
	for _, s := range steps {
		st := wantOK(t, e.run("record", "verify.ana", request("ana", "fullname", s.fullname)), "record")
		if !strings.HasPrefix(st.Note, s.wantNote) {
			t.Errorf("%s: note %q; want %q…", s.name, st.Note, s.wantNote)
		}
		if got := commitCount(t, repo); got != s.wantCommits {
			t.Errorf("%s: %d commits; want %d", s.name, got, s.wantCommits)
		}
	}
	if got := commitMessage(t, repo, "HEAD"); got != "Add user ana (Ana Lima-Souza)" {
		t.Errorf("last commit message %q", got)
	}
}

// TestGitCommitPathEscape is C3: a user name never makes git_commit write
// outside its repository or into .git.
func TestGitCommitPathEscape(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	repo := filepath.Join(e.root, "var/users")
	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")
	gitConfig, err := os.ReadFile(filepath.Join(repo, ".git/config"))
	if err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(e.root, "outside.json")
	outsideDir := filepath.Join(e.root, "outside-dir")
	if err := os.Mkdir(outsideDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outsideDir, filepath.Join(repo, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(repo, "users", "eve.json")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		pipeline string
		username string
		wantErr  string
	}{
		{"parent directories", "record", "../../tmp/x", `path "users/../../tmp/x.json" leaves the repository`},
		{"parent of the repository", "raw", "../escaped.json", `path "../escaped.json" leaves the repository`},
		{"absolute path", "raw", outside, fmt.Sprintf("path %q leaves the repository", outside)},
		{"git config", "raw", ".git/config", `path ".git/config" has a .git component`},
		{"git config in capitals", "raw", ".GIT/config", `path ".GIT/config" has a .git component`},
		{"git hook through a detour", "raw", "users/../.git/hooks/post-commit",
			`path "users/../.git/hooks/post-commit" has a .git component`},
		{"nested repository", "raw", "users/.git/config", `path "users/.git/config" has a .git component`},
		{"directory", "raw", "users/", `path "users/" names a directory`},
		{"empty", "raw", "", "path rendered empty"},
		{"line break", "raw", "users/a\nb.json", `path "users/a\nb.json" contains a control character`},
		{"directory link", "raw", "link/escaped.json",
			`path "link/escaped.json" passes through the symbolic link link; records are written only inside the repository`},
		{"file link", "record", "eve",
			`path "users/eve.json" passes through the symbolic link users/eve.json; records are written only inside the repository`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, e.root)
			res := e.run(tt.pipeline, "verify.x", request(tt.username, "fullname", "[core]\n\thooksPath = /tmp"))
			wantFailed(t, res, "record", tt.wantErr)

			if after := snapshot(t, e.root); after != before {
				t.Errorf("files changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if got, _ := os.ReadFile(filepath.Join(repo, ".git/config")); !bytes.Equal(got, gitConfig) {
				t.Errorf(".git/config changed:\n%s", got)
			}
			if got := commitCount(t, repo); got != 1 {
				t.Errorf("%d commits; want 1", got)
			}
		})
	}
	escaped := []string{outside, filepath.Join(e.root, "tmp/x.json"), filepath.Join(e.root, "var/escaped.json"),
		filepath.Join(outsideDir, "escaped.json")}
	for _, p := range escaped {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was written", p)
		}
	}
}

// TestGitCommitHardLink: a checkout file that is a hard link to a file
// outside the repository is replaced by the record, and the outside file
// is left as it was.
func TestGitCommitHardLink(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	repo := filepath.Join(e.root, "var/users")
	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")
	hard := filepath.Join(e.root, "hard-outside.json")
	writeFile(t, hard, "keep me\n")
	if err := os.Link(hard, filepath.Join(repo, "users", "hal.json")); err != nil {
		t.Fatal(err)
	}
	wantOK(t, e.run("record", "verify.hal", request("hal")), "record")
	if got, _ := os.ReadFile(hard); string(got) != "keep me\n" {
		t.Fatalf("the hard-linked file outside was written: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(repo, "users", "hal.json")); !strings.Contains(string(got), `"username": "hal"`) {
		t.Fatalf("users/hal.json = %q, want the record", got)
	}
}

// TestGitCommitPathspecMagic is C3 for git's own syntax: a rendered path
// is one literal file, never a pathspec that sweeps other files of the
// work tree into the user's commit.
func TestGitCommitPathspecMagic(t *testing.T) {
	tests := []string{":!x", ":(exclude)x", ":(glob)**", "*", "[n]*", "notes-*"}
	for _, name := range tests {
		t.Run(name, func(t *testing.T) {
			hermeticGit(t)
			e := newEnv(t, gitPipelines)
			repo := filepath.Join(e.root, "var/users")
			wantOK(t, e.run("raw", "verify.ana", request("ana.json")), "record")
			writeFile(t, filepath.Join(repo, "notes-private.txt"), "not for the record\n")

			wantOK(t, e.run("raw", "verify.x", request(name)), "record")
			want := []string{"ana.json", name}
			sort.Strings(want) // git lists a tree in byte order too
			if got := git(t, repo, "ls-tree", "-r", "--name-only", "HEAD"); got != strings.Join(want, "\n") {
				t.Errorf("committed tree:\n%s\nwant only %q", got, want)
			}
			if got := git(t, repo, "status", "--porcelain"); got != "?? notes-private.txt" {
				t.Errorf("status %q; want notes-private.txt left untracked", got)
			}
		})
	}
}

// snapshot lists every file under root with its size, except the store's
// database files, which change with every message.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(rel, "regflow.db") || d.IsDir() && rel == filepath.Join("var/users/.git") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d\n", rel, info.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// pushPipeline commits into a clone and pushes to its origin.
const pushPipeline = `
pipeline "record" {
  on = ["verify.*"]
  git_commit "record" {
    repo    = "var/users"
    path    = "users/{{ msg.username }}.json"
    message = "Add user {{ msg.username }}"
    push    = true
  }
}
`

func TestGitCommitPush(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, pushPipeline)
	remote := filepath.Join(t.TempDir(), "users.git")
	git(t, e.root, "init", "--quiet", "--bare", remote)
	git(t, e.root, "clone", "--quiet", remote, "var/users")

	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")
	wantOK(t, e.run("record", "verify.bob", request("bob")), "record")

	if got := git(t, remote, "log", "--format=%s", "main"); got != "Add user bob\nAdd user ana" {
		t.Errorf("remote main log:\n%s", got)
	}
	if got := git(t, remote, "ls-tree", "-r", "--name-only", "main"); got != "users/ana.json\nusers/bob.json" {
		t.Errorf("remote main tree:\n%s", got)
	}
}

// TestGitCommitPushRace: another clone pushed first, so the first push is
// rejected; the step rebases onto the remote and pushes again.
func TestGitCommitPushRace(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, pushPipeline)
	tmp := t.TempDir()
	remote := filepath.Join(tmp, "users.git")
	git(t, tmp, "init", "--quiet", "--bare", "--initial-branch=main", remote)
	seed := filepath.Join(tmp, "seed")
	git(t, tmp, "clone", "--quiet", remote, seed)
	writeFile(t, filepath.Join(seed, "README"), "users\n")
	git(t, seed, "add", "README")
	git(t, seed, "commit", "--quiet", "-m", "seed")
	git(t, seed, "push", "--quiet", "origin", "HEAD:main")

	git(t, e.root, "clone", "--quiet", remote, "var/users")

	other := filepath.Join(tmp, "other")
	git(t, tmp, "clone", "--quiet", remote, other)
	writeFile(t, filepath.Join(other, "users/zoe.json"), "{}\n")
	git(t, other, "add", "users/zoe.json")
	git(t, other, "commit", "--quiet", "-m", "Add user zoe")
	git(t, other, "push", "--quiet", "origin", "HEAD:main")

	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")

	if got := git(t, remote, "log", "--format=%s", "main"); got != "Add user ana\nAdd user zoe\nseed" {
		t.Errorf("remote main log:\n%s", got)
	}
	const wantTree = "README\nusers/ana.json\nusers/zoe.json"
	if got := git(t, remote, "ls-tree", "-r", "--name-only", "main"); got != wantTree {
		t.Errorf("remote main tree:\n%s", got)
	}
	local := filepath.Join(e.root, "var/users")
	if l, r := git(t, local, "rev-parse", "HEAD"), git(t, remote, "rev-parse", "main"); l != r {
		t.Errorf("local HEAD %s, remote main %s; want equal", l, r)
	}
}

func TestGitCommitPushWithoutRemote(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, pushPipeline)
	st := stepOf(t, e.run("record", "verify.ana", request("ana")), "record")
	const want = "git pull: fatal: 'origin' does not appear to be a git repository"
	if st.Status != engine.StepFailed || st.Error != want {
		t.Fatalf("status %s, error %q; want failed with %q", st.Status, st.Error, want)
	}
	if got := commitCount(t, filepath.Join(e.root, "var/users")); got != 1 {
		t.Errorf("%d local commits; want 1 (kept for the next attempt)", got)
	}
}

// TestGitCommitSandbox: in the sandbox an absolute repository moves under
// the sandbox and nothing is pushed.
func TestGitCommitSandbox(t *testing.T) {
	hermeticGit(t)
	cfg := loadConfig(t, `
pipeline "record" {
  on = ["verify.*"]
  git_commit "record" {
    repo = "/srv/regflow-test/users"
    path = "{{ msg.username }}.json"
    push = true
  }
}
`)
	dir := t.TempDir()
	svc, err := engine.Sandbox(cfg, dir, &recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Store.Close() })
	res, err := engine.NewRunner(cfg, svc).Handle(t.Context(), cfg.Pipelines[0],
		&engine.Delivery{RoutingKey: "verify.ana", Body: encode(t, request("ana"))})
	if err != nil {
		t.Fatal(err)
	}
	st := wantOK(t, res, "record")
	if !strings.HasPrefix(st.Note, "committed ana.json as ") ||
		!strings.HasSuffix(st.Note, "; push skipped in the sandbox") {
		t.Errorf("note %q", st.Note)
	}
	repo := filepath.Join(dir, "root/srv/regflow-test/users")
	if got := commitCount(t, repo); got != 1 {
		t.Errorf("%d commits in the sandboxed repository; want 1", got)
	}
	if _, err := os.Stat("/srv/regflow-test"); err == nil {
		t.Errorf("the sandbox wrote to /srv/regflow-test")
	}
}

// TestGitCommitConcurrent: steps writing to one repository at once all
// commit; none trips over another's index.lock. Records that arrive
// together share a commit, whose message names each of them.
func TestGitCommitConcurrent(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for i := range 8 {
		user := fmt.Sprintf("user%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.handle("record", "verify."+user, request(user))
			if err != nil {
				errs <- err.Error()
				return
			}
			if st := res.Steps[0]; st.Status != engine.StepOK {
				errs <- user + ": " + st.Error
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	repo := filepath.Join(e.root, "var/users")
	if got := commitCount(t, repo); got < 1 || got > 8 {
		t.Errorf("%d commits; want between 1 and 8", got)
	}
	if got := strings.Count(git(t, repo, "ls-tree", "-r", "--name-only", "HEAD"), ".json"); got != 8 {
		t.Errorf("%d files committed; want 8", got)
	}
	// Every user's record is in exactly one commit, whose message names it.
	for i := range 8 {
		user := fmt.Sprintf("user%d", i)
		log := git(t, repo, "log", "--format=%B", "--", "users/"+user+".json")
		if !strings.Contains(log, user) {
			t.Errorf("the commit that added %s does not name it:\n%s", user, log)
		}
		if n := len(strings.Fields(git(t, repo, "log", "--format=%H", "--", "users/"+user+".json"))); n != 1 {
			t.Errorf("%s's record is in %d commits; want 1", user, n)
		}
	}
}

func TestGitCommitConfig(t *testing.T) {
	tests := []struct {
		name, step, wantSummary string
	}{
		{"author without a name", `author = "regflow@localhost"`, "Invalid author"},
		{"empty repo", `repo = ""`, "Empty repo"},
		{"missing path", `repo = "users"`, "Missing required argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			step := tt.step
			if !strings.Contains(step, "repo") {
				step += "\n    repo = \"users\""
			}
			if !strings.Contains(tt.name, "missing path") {
				step += "\n    path = \"x.json\""
			}
			diags := loadDiags(t, `
pipeline "record" {
  on = ["verify.*"]
  git_commit "record" {
    `+step+`
  }
}
`)
			if !hasDiag(diags, tt.wantSummary) {
				t.Fatalf("diagnostics:\n%s\nwant %q", diagText(diags), tt.wantSummary)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestGroupMessage(t *testing.T) {
	if got := actions.GroupMessage([]string{"Add user ana (Ana Lima)"}); got != "Add user ana (Ana Lima)" {
		t.Errorf("one record: %q; its message is kept exactly", got)
	}
	got := actions.GroupMessage([]string{"Add user ana (Ana)", "Add user bo (Bo)\n", "Add user cid (Cid)"})
	want := "Add user ana (Ana) and 2 more\n\nAdd user ana (Ana)\n\nAdd user bo (Bo)\n\nAdd user cid (Cid)\n"
	if got != want {
		t.Errorf("three records:\n%q\nwant\n%q", got, want)
	}
}

// TestGitIndexCatchesUp: a commit whose index update was lost (regflow
// killed between the two) leaves the checkout's index behind; the next
// regflow brings it up to date, so git status is clean again.
func TestGitIndexCatchesUp(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")
	repo := filepath.Join(e.root, "var/users")
	// Take ana's entry out of the index, as a lost update would leave it.
	git(t, repo, "rm", "--cached", "--quiet", "users/ana.json")
	if st := git(t, repo, "status", "--porcelain"); st == "" {
		t.Fatal("the index was not made to lag")
	}
	actions.ForgetCommitters() // as a restart of regflow would
	wantOK(t, e.run("record", "verify.bo", request("bo")), "record")
	if st := git(t, repo, "status", "--porcelain"); st != "" {
		t.Fatalf("git status after the next commit:\n%s", st)
	}
}

// TestGitCorruptIndexRebuilt: an index left half-written (a crash of some
// other git, a full disk) does not stop commits: regflow rebuilds it from
// the branch's head and git status is clean afterwards.
func TestGitCorruptIndexRebuilt(t *testing.T) {
	hermeticGit(t)
	logs := &logBuffer{}
	e := newEnv(t, gitPipelines, withLogs(logs))
	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")
	repo := filepath.Join(e.root, "var/users")
	writeFile(t, filepath.Join(repo, ".git/index"), "DIRC\x00\x00\x00\x02garbage")
	actions.ForgetCommitters()
	wantOK(t, e.run("record", "verify.bo", request("bo")), "record")
	if st := git(t, repo, "status", "--porcelain"); st != "" {
		t.Fatalf("git status after the rebuild:\n%s", st)
	}
	if got := git(t, repo, "ls-files"); got != "users/ana.json\nusers/bo.json" {
		t.Errorf("index lists %q", got)
	}
	if !strings.Contains(logs.String(), "git checkout repaired") {
		t.Errorf("the rebuild was not logged:\n%s", logs.String())
	}
}

// TestGitStaleIndexLockFromDeadProcess: an index.lock that a regflow left
// when it was killed while writing the index is removed at the next
// start, instead of failing every commit for two minutes; a lock some
// other git holds is left alone.
func TestGitStaleIndexLockFromDeadProcess(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")
	repo := filepath.Join(e.root, "var/users")
	lock := filepath.Join(repo, ".git/index.lock")

	// Another git's lock: regflow waits for it (the step fails, to be
	// retried) and does not remove it.
	writeFile(t, lock, "")
	actions.ForgetCommitters()
	wantFailed(t, e.run("record", "verify.bo", request("bo")), "record",
		"commit: the repository is locked by another git process (.git/index.lock exists)")
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("another process's index.lock was removed: %v", err)
	}
	os.Remove(lock)

	// regflow's own lock, as a kill -9 between taking and renaming it
	// leaves it: its twin is the same file.
	twin := filepath.Join(repo, ".git/regflow-index.lock")
	writeFile(t, twin, "")
	if err := os.Link(twin, lock); err != nil {
		t.Fatal(err)
	}
	actions.ForgetCommitters()
	wantOK(t, e.run("record", "verify.cy", request("cy")), "record")
	for _, p := range []string{lock, twin} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if st := git(t, repo, "status", "--porcelain"); st != "" {
		t.Fatalf("git status:\n%s", st)
	}
}

// TestGitBareRepository: a repo that is a bare repository gets commits
// on its branch and no checkout made inside it.
func TestGitBareRepository(t *testing.T) {
	hermeticGit(t)
	e := newEnv(t, gitPipelines)
	repo := filepath.Join(e.root, "var/users")
	git(t, e.root, "init", "--quiet", "--bare", "--initial-branch=main", repo)
	wantOK(t, e.run("record", "verify.ana", request("ana")), "record")
	if _, err := os.Stat(filepath.Join(repo, ".git")); !os.IsNotExist(err) {
		t.Errorf("a checkout was made inside the bare repository: %v", err)
	}
	if got := git(t, repo, "ls-tree", "-r", "--name-only", "main"); got != "users/ana.json" {
		t.Errorf("main holds %q", got)
	}
}
