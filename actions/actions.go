// Package actions holds regflow's built-in actions, one file each. Every
// action is an engine.ActionSpec: the attributes it takes, the fields it
// adds to the message, and how to run it.
package actions

import "regflow/engine"

// All returns the specs of every built-in action.
func All() []*engine.ActionSpec {
	return []*engine.ActionSpec{
		Validate,
		AllocateUID,
		GitCommit,
		SubscribeList,
		SendEmail,
		LogEvent,
		Publish,
		Exec,
	}
}

// Registry returns a registry of every built-in action.
func Registry() *engine.Registry {
	return engine.NewRegistry(All()...)
}
