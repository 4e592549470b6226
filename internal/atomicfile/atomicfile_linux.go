package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// createUnnamed writes data into a file that has no name yet (O_TMPFILE)
// and then gives it one. Compared with a temporary name and a rename, it
// spares the directory one entry and one rename, which on a busy disk is
// most of what writing a small file costs.
func createUnnamed(path string, data []byte, perm os.FileMode) error {
	fd, err := unix.Open(filepath.Dir(path), unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, uint32(perm))
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
			return errUnsupported
		}
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return errUnsupported // no /proc
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, &os.PathError{Op: "link", Path: path, Err: err})
	}
	return nil
}
