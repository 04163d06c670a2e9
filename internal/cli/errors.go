package cli

import (
	"errors"

	"banger/internal/api"
)

func asErr[T error](err error, target *T) bool { return errors.As(err, target) }

func isDaemonDown(err error) bool { return errors.Is(err, api.ErrDaemonDown) }
