// Package atomicfile creates files that appear whole or not at all.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrExist is returned by Create when the file exists already.
var ErrExist = os.ErrExist

// Create writes data to a new file at path, which appears whole or not
// at all: a reader never sees part of it, and a crash leaves no partial
// file. It fails with an error wrapping ErrExist when path exists.
func Create(path string, data []byte, perm os.FileMode) error {
	if err := createUnnamed(path, data, perm); !errors.Is(err, errUnsupported) {
		return err
	}
	return createRenamed(path, data, perm)
}

var errUnsupported = errors.New("unnamed files are not supported here")

// createRenamed writes a temporary file beside path and links it into
// place; the link fails rather than replace an existing file.
func createRenamed(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}
