//go:build !linux

package atomicfile

import "os"

func createUnnamed(path string, data []byte, perm os.FileMode) error { return errUnsupported }
