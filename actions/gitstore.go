package actions

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"regflow/engine"
	"regflow/internal/atomicfile"
)

// gitStore writes commits into a repository in-process with go-git: a
// blob per record, the trees on the records' paths, a commit, and the
// branch moved with compare-and-swap. A forked git costs tens of
// milliseconds on a repository of a few thousand users, for reading and
// writing the whole index and tree; this touches only what changed. The
// trees at the branch's head stay cached between commits. A checkout's
// index is updated too, under git's own index.lock, so that git status
// stays clean and a person's next commit does not undo regflow's.
type gitStore struct {
	dir    string
	gitDir string // dir itself when bare, else dir/.git
	bare   bool
	repo   *git.Repository

	head  plumbing.Hash           // the commit the cached trees belong to
	trees map[string]*object.Tree // by directory, "" the root; nil when unknown

	index     *index.Index // the checkout's index as last written; nil when unknown
	indexSize int64        // size and modification time of the index file then,
	indexTime time.Time    // to notice a change made by anyone else

	// lagging holds the committed records the checkout's index does not
	// show yet, by path: the index is brought up to date after each
	// commit, and again after a failure.
	lagging map[string]plumbing.Hash

	rebuilt string // why the index was rebuilt, to be logged once; "" if it was not
	dirty   bool   // the index in memory must be written even if no record lags
}

func openGitStore(dir string) (*gitStore, error) {
	fs := osfs.New(dir)
	dotgit, bare, gitDir := fs, true, dir
	if st, err := os.Stat(filepath.Join(dir, ".git")); err == nil && st.IsDir() {
		dotgit, _ = fs.Chroot(".git")
		bare, gitDir = false, filepath.Join(dir, ".git")
	}
	storage := filesystem.NewStorage(dotgit, cache.NewObjectLRU(4*cache.MiByte))
	var repo *git.Repository
	var err error
	if bare {
		repo, err = git.Open(storage, nil)
	} else {
		repo, err = git.Open(storage, fs)
	}
	if err != nil {
		return nil, engine.Permanent(fmt.Errorf("open repository %s: %w", dir, err))
	}
	g := &gitStore{dir: dir, gitDir: gitDir, bare: bare, repo: repo, lagging: map[string]plumbing.Hash{}}
	return g, nil
}

// treeKey orders tree entries as git does: a directory as if its name
// ended in a slash.
func treeKey(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

// tree returns the tree of directory dir at the cached head, loading it
// on first use; a directory that does not exist yet is an empty tree.
func (g *gitStore) tree(dir string) (*object.Tree, error) {
	if t, ok := g.trees[dir]; ok {
		return t, nil
	}
	t := &object.Tree{}
	if dir != "" {
		parent, err := g.tree(path.Dir(strings.TrimSuffix("/"+dir, "/"))[1:])
		if err != nil {
			return nil, err
		}
		for _, e := range parent.Entries {
			if e.Name == path.Base(dir) && e.Mode == filemode.Dir {
				if t, err = object.GetTree(g.repo.Storer, e.Hash); err != nil {
					return nil, err
				}
			}
		}
	}
	g.trees[dir] = t
	return t, nil
}

// load points the cache at the branch's current commit.
func (g *gitStore) load(branch plumbing.ReferenceName) (*plumbing.Reference, error) {
	ref, err := g.repo.Storer.Reference(branch)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		ref, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	var head plumbing.Hash
	if ref != nil {
		head = ref.Hash()
	}
	if g.trees != nil && head == g.head {
		return ref, nil
	}
	g.head, g.trees = head, map[string]*object.Tree{}
	if ref != nil {
		c, err := g.repo.CommitObject(head)
		if err != nil {
			return nil, err
		}
		root, err := c.Tree()
		if err != nil {
			return nil, err
		}
		g.trees[""] = root
	}
	return ref, nil
}

// entryHash returns the blob at rel in the cached head, or zero.
func (g *gitStore) entryHash(rel string) (plumbing.Hash, error) {
	dir, name := path.Split(rel)
	t, err := g.tree(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return plumbing.ZeroHash, err
	}
	for _, e := range t.Entries {
		if e.Name == name && e.Mode != filemode.Dir {
			return e.Hash, nil
		}
	}
	return plumbing.ZeroHash, nil
}

// commit commits the records on branch with message (built from the
// records that changed) and returns the new commit's hash, or "" when
// every record was committed already, and which paths changed.
func (g *gitStore) commit(recs []record, branch string, sig object.Signature,
	message func(changed []record) string) (string, map[string]bool, error) {
	ref := plumbing.NewBranchReferenceName(branch)
	for try := 0; ; try++ {
		head, err := g.load(ref)
		if err != nil {
			return "", nil, engine.Permanent(fmt.Errorf("read %s: %w", branch, err))
		}
		hash, changed, err := g.tryCommit(recs, head, ref, sig, message)
		if errors.Is(err, errMoved) && try < 3 {
			g.trees = nil // someone else committed: start from their commit
			continue
		}
		return hash, changed, err
	}
}

var errMoved = errors.New("the branch moved")

func (g *gitStore) tryCommit(recs []record, head *plumbing.Reference, ref plumbing.ReferenceName,
	sig object.Signature, message func([]record) string) (string, map[string]bool, error) {
	// The last record for a path wins, as it would on disk.
	last := map[string]int{}
	for i, r := range recs {
		last[r.rel] = i
	}
	var todo, latest []record
	blobs := map[string]plumbing.Hash{}
	changed := map[string]bool{}
	for i, r := range recs {
		if last[r.rel] != i {
			continue
		}
		latest = append(latest, r)
		h := plumbing.ComputeHash(plumbing.BlobObject, r.content)
		blobs[r.rel] = h
		old, err := g.entryHash(r.rel)
		if err != nil {
			return "", nil, engine.Permanent(fmt.Errorf("read tree: %w", err))
		}
		if old == h {
			continue
		}
		changed[r.rel] = true
		todo = append(todo, r)
	}
	g.lag(latest, blobs)
	if len(todo) == 0 {
		return "", changed, nil
	}

	st := g.repo.Storer
	for _, r := range todo {
		if _, err := g.writeLoose(plumbing.BlobObject, r.content); err != nil {
			return "", nil, err
		}
	}
	// New trees, copied from the cached ones, deepest directories first.
	trees := map[string]*object.Tree{}
	dirty := func(dir string) (*object.Tree, error) {
		if t, ok := trees[dir]; ok {
			return t, nil
		}
		old, err := g.tree(dir)
		if err != nil {
			return nil, err
		}
		t := &object.Tree{Entries: append([]object.TreeEntry(nil), old.Entries...)}
		trees[dir] = t
		return t, nil
	}
	set := func(t *object.Tree, e object.TreeEntry) {
		for i := range t.Entries {
			if t.Entries[i].Name == e.Name {
				t.Entries[i] = e
				return
			}
		}
		t.Entries = append(t.Entries, e)
	}
	for _, r := range todo {
		dir, name := path.Split(r.rel)
		dir = strings.TrimSuffix(dir, "/")
		t, err := dirty(dir)
		if err != nil {
			return "", nil, engine.Permanent(fmt.Errorf("read tree: %w", err))
		}
		set(t, object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: blobs[r.rel]})
		for dir != "" { // every directory above changes too
			parent := path.Dir("/" + dir)[1:]
			if _, err := dirty(parent); err != nil {
				return "", nil, engine.Permanent(fmt.Errorf("read tree: %w", err))
			}
			dir = parent
		}
	}
	dirs := make([]string, 0, len(trees))
	for d := range trees {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool {
		return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") ||
			strings.Count(dirs[i], "/") == strings.Count(dirs[j], "/") && len(dirs[i]) > len(dirs[j])
	})
	var root plumbing.Hash
	for _, d := range dirs {
		t := trees[d]
		sort.Slice(t.Entries, func(i, j int) bool { return treeKey(t.Entries[i]) < treeKey(t.Entries[j]) })
		h, err := writeObject(g, t, plumbing.TreeObject)
		if err != nil {
			return "", nil, err
		}
		t.Hash = h
		if d == "" {
			root = h
			continue
		}
		set(trees[path.Dir("/" + d)[1:]], object.TreeEntry{Name: path.Base(d), Mode: filemode.Dir, Hash: h})
	}

	c := &object.Commit{Author: sig, Committer: sig, Message: message(todo), TreeHash: root}
	if head != nil {
		c.ParentHashes = []plumbing.Hash{head.Hash()}
	}
	ch, err := writeObject(g, c, plumbing.CommitObject)
	if err != nil {
		return "", nil, err
	}
	newRef := plumbing.NewHashReference(ref, ch)
	if err := st.CheckAndSetReference(newRef, head); err != nil {
		if head != nil {
			if cur, rerr := st.Reference(ref); rerr == nil && cur.Hash() != head.Hash() {
				return "", nil, errMoved
			}
		}
		return "", nil, engine.Transient(fmt.Errorf("update %s: %w", ref.Short(), err))
	}
	if head == nil {
		// A new repository's HEAD may name another branch: point it here.
		if err := st.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, ref)); err != nil {
			return "", nil, engine.Transient(err)
		}
	}
	// The cache now describes the new commit.
	g.head = ch
	for d, t := range trees {
		g.trees[d] = t
	}
	return ch.String()[:7], changed, nil
}

// findLagging looks, once after opening, for files of the branch's head
// that the checkout's index does not show although the checkout holds
// them as committed: what a crash between a commit and its index update
// leaves. They are fixed with the next index update.
func (g *gitStore) findLagging(branch string) error {
	if g.bare {
		return nil
	}
	ref, err := g.repo.Storer.Reference(plumbing.NewBranchReferenceName(branch))
	if err != nil {
		return nil // no commit yet
	}
	g.head = ref.Hash()
	c, err := g.repo.CommitObject(ref.Hash())
	if err != nil {
		return err
	}
	tree, err := c.Tree()
	if err != nil {
		return err
	}
	idx, err := g.readIndex()
	if err != nil {
		return err
	}
	return tree.Files().ForEach(func(f *object.File) error {
		if e, err := idx.Entry(f.Name); err == nil && e.Hash == f.Hash {
			return nil
		}
		content, err := os.ReadFile(filepath.Join(g.dir, f.Name))
		if err == nil && plumbing.ComputeHash(plumbing.BlobObject, content) == f.Hash {
			g.lagging[f.Name] = f.Hash
		}
		return nil
	})
}

// lag notes records whose index entries may need an update.
func (g *gitStore) lag(recs []record, blobs map[string]plumbing.Hash) {
	if g.bare {
		return
	}
	for _, r := range recs {
		g.lagging[r.rel] = blobs[r.rel]
	}
}

// syncIndex brings the checkout's index up to date with what was
// committed. A failure leaves the records lagging for the next try.
func (g *gitStore) syncIndex() error {
	if g.bare || len(g.lagging) == 0 && !g.dirty {
		return nil
	}
	if err := g.updateIndex(g.lagging); err != nil {
		return err
	}
	clear(g.lagging)
	return nil
}

// zlibWriters keeps compressors between objects: a new one allocates
// about a megabyte of state.
var zlibWriters = sync.Pool{New: func() any {
	w, _ := zlib.NewWriterLevel(nil, zlib.BestSpeed)
	return w
}}

func writeObject(g *gitStore, o interface {
	Encode(plumbing.EncodedObject) error
}, t plumbing.ObjectType) (plumbing.Hash, error) {
	obj := &plumbing.MemoryObject{}
	obj.SetType(t)
	if err := o.Encode(obj); err != nil {
		return plumbing.ZeroHash, engine.Permanent(fmt.Errorf("encode %s: %w", t, err))
	}
	r, _ := obj.Reader()
	content, _ := io.ReadAll(r)
	return g.writeLoose(t, content)
}

// writeLoose stores an object as git does, a zlib stream in
// objects/xx/yyyy…, but compressed for speed: every commit rewrites the
// tree of the directory that holds the records, and with thousands of
// users git's default compression of it is most of a commit's cost.
// git reads any compression level.
func (g *gitStore) writeLoose(t plumbing.ObjectType, content []byte) (plumbing.Hash, error) {
	h := plumbing.ComputeHash(t, content)
	hex := h.String()
	dir := filepath.Join(g.gitDir, "objects", hex[:2])
	final := filepath.Join(dir, hex[2:])
	if _, err := os.Stat(final); err == nil {
		return h, nil
	}
	fail := func(err error) (plumbing.Hash, error) {
		return plumbing.ZeroHash, engine.Transient(fmt.Errorf("write %s object: %w", t, err))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	var buf bytes.Buffer
	zw := zlibWriters.Get().(*zlib.Writer)
	defer zlibWriters.Put(zw)
	zw.Reset(&buf)
	zw.Write(fmt.Appendf(nil, "%s %d\x00", t, len(content)))
	zw.Write(content)
	zw.Close()
	if err := atomicfile.Create(final, buf.Bytes(), 0o444); err != nil && !errors.Is(err, atomicfile.ErrExist) {
		return fail(err)
	}
	return h, nil
}

// updateIndex records the committed files in the checkout's index, as
// git add would, holding index.lock as git does.
func (g *gitStore) updateIndex(blobs map[string]plumbing.Hash) error {
	idx, err := g.readIndex()
	if err != nil {
		return engine.Transient(fmt.Errorf("read index: %w", err))
	}
	type update struct {
		rel string
		fi  os.FileInfo
	}
	var updates []update
	for rel, h := range blobs {
		fi, err := os.Stat(filepath.Join(g.dir, rel))
		if err != nil {
			return engine.Transient(fmt.Errorf("stat %s: %w", rel, err))
		}
		if e, err := idx.Entry(rel); err == nil && e.Hash == h &&
			e.ModifiedAt.Equal(fi.ModTime()) && int64(e.Size) == fi.Size() {
			continue
		}
		updates = append(updates, update{rel, fi})
	}
	if len(updates) == 0 && !g.dirty {
		return nil
	}
	// The lock is taken by linking a file of regflow's own to
	// index.lock, which fails when the lock exists, like git's O_EXCL.
	// The twin names the lock as regflow's: a regflow killed before the
	// rename knows at its next start that the lock was its own.
	lock := filepath.Join(g.gitDir, "index.lock")
	twin := filepath.Join(g.gitDir, lockTwin)
	os.Remove(twin) // a leftover
	f, err := os.OpenFile(twin, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return engine.Transient(fmt.Errorf("update index: %w", err))
	}
	f.Close()
	defer os.Remove(twin)
	if err := os.Link(twin, lock); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return engine.Transient(errors.New("update index: the repository is locked by another git process"))
		}
		return engine.Transient(fmt.Errorf("update index: %w", err))
	}
	defer os.Remove(lock) // gone already when the new index was renamed into place
	for _, u := range updates {
		e, err := idx.Entry(u.rel)
		if err != nil {
			e = idx.Add(u.rel)
		}
		e.Hash, e.Mode, e.Size = blobs[u.rel], filemode.Regular, uint32(u.fi.Size())
		e.ModifiedAt, e.CreatedAt = u.fi.ModTime(), u.fi.ModTime()
		if sys, ok := statOf(u.fi); ok {
			e.Dev, e.Inode, e.UID, e.GID = sys.dev, sys.ino, sys.uid, sys.gid
			e.CreatedAt = sys.ctime
		}
	}
	sort.Slice(idx.Entries, func(i, j int) bool { return idx.Entries[i].Name < idx.Entries[j].Name })
	idx.Cache = nil // the tree cache extension no longer matches
	if err := g.writeIndex(idx, lock); err != nil {
		g.index = nil
		return engine.Transient(fmt.Errorf("write index: %w", err))
	}
	g.index, g.dirty = idx, false
	if fi, err := os.Stat(filepath.Join(g.gitDir, "index")); err == nil {
		g.indexSize, g.indexTime = fi.Size(), fi.ModTime()
	} else {
		g.index = nil
	}
	return nil
}

// lockTwin is regflow's second name for the index.lock it holds.
const lockTwin = "regflow-index.lock"

// clearOwnLock removes an index.lock that a regflow left when it died
// while writing the index: the one that is the same file as lockTwin.
// Another process's lock, such as a git commit someone is making, is left
// alone. The caller holds the directory lock, so no live regflow is
// writing.
func clearOwnLock(gitDir string, log *slog.Logger) error {
	twin := filepath.Join(gitDir, lockTwin)
	tfi, err := os.Stat(twin)
	if err != nil {
		return nil
	}
	lock := filepath.Join(gitDir, "index.lock")
	if lfi, err := os.Stat(lock); err == nil && os.SameFile(tfi, lfi) {
		log.Warn("removing the index.lock of a regflow that stopped while writing it", "path", lock)
		if err := os.Remove(lock); err != nil && !os.IsNotExist(err) {
			return engine.Transient(fmt.Errorf("remove %s: %w", lock, err))
		}
	}
	os.Remove(twin)
	return nil
}

// writeIndex writes idx as git does: into the lock file, which becomes the
// index by a rename, so a crash leaves the old index or the new one, never
// half of one.
func (g *gitStore) writeIndex(idx *index.Index, lock string) error {
	f, err := os.OpenFile(lock, os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := index.NewEncoder(w).Encode(idx); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(lock, filepath.Join(g.gitDir, "index"))
}

// readIndex returns the index, decoding the file only when someone other
// than regflow changed it since regflow wrote it. An index that cannot be
// read is rebuilt from the branch's head.
func (g *gitStore) readIndex() (*index.Index, error) {
	if g.index != nil {
		if fi, err := os.Stat(filepath.Join(g.gitDir, "index")); err == nil &&
			fi.Size() == g.indexSize && fi.ModTime().Equal(g.indexTime) {
			return g.index, nil
		}
	}
	g.index = nil
	idx, err := g.repo.Storer.Index()
	if err == nil {
		return idx, nil
	}
	if g.head.IsZero() {
		return nil, err
	}
	g.rebuilt = fmt.Sprintf("the index could not be read (%v) and was rebuilt from %s", err, g.head.String()[:7])
	g.dirty = true
	return g.indexFromHead()
}

// indexFromHead makes an index that shows the head's files, as
// git reset would: what a corrupt index is replaced with.
func (g *gitStore) indexFromHead() (*index.Index, error) {
	c, err := g.repo.CommitObject(g.head)
	if err != nil {
		return nil, err
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	idx := &index.Index{Version: 2}
	err = tree.Files().ForEach(func(f *object.File) error {
		e := idx.Add(f.Name)
		e.Hash, e.Mode = f.Hash, f.Mode
		if fi, err := os.Stat(filepath.Join(g.dir, f.Name)); err == nil {
			e.Size, e.ModifiedAt = uint32(fi.Size()), fi.ModTime()
			if sys, ok := statOf(fi); ok {
				e.Dev, e.Inode, e.UID, e.GID, e.CreatedAt = sys.dev, sys.ino, sys.uid, sys.gid, sys.ctime
			}
		}
		return nil
	})
	return idx, err
}
