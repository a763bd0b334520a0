package node

import (
	"errors"

	"golang.org/x/sys/unix"
)

func isNotSupported(err error) bool { return errors.Is(err, unix.EOPNOTSUPP) }
