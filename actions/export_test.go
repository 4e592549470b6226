package actions

// ForgetCommitters drops the open repositories, as a restart of regflow
// would.
func ForgetCommitters() {
	committers.Range(func(k, _ any) bool {
		committers.Delete(k)
		return true
	})
}
