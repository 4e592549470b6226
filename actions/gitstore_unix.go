//go:build unix

package actions

import (
	"os"
	"syscall"
	"time"
)

type fileStat struct {
	dev, ino, uid, gid uint32
	ctime              time.Time
}

// statOf returns what git's index keeps of a file beyond size and mtime,
// so that git status finds the entry up to date without rehashing.
func statOf(fi os.FileInfo) (fileStat, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, false
	}
	return fileStat{dev: uint32(st.Dev), ino: uint32(st.Ino), uid: st.Uid, gid: st.Gid,
		ctime: time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec))}, true
}

// sharedFile reports whether the file has more names than this one (a hard
// link), so that writing to it would change a file elsewhere.
func sharedFile(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink > 1
}
