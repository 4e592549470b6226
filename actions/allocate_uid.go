package actions

import (
	"context"
	"errors"
	"math"

	"regflow/engine"
)

// AllocateUID reserves a uid and gid for a user from a range. The same
// user always gets the same ids, and no id ever goes to two users: the
// store holds ids with UNIQUE constraints and allocates in one write
// transaction.
var AllocateUID = &engine.ActionSpec{
	Name:    "allocate_uid",
	Summary: "Reserve a uid and gid for the user; the same user always gets the same ids.",
	Attrs: []engine.AttrSpec{
		{Name: "uid_range", Kind: engine.AttrIntRange, Required: true,
			Doc: "Lowest and highest uid to hand out, inclusive.", Example: `uid_range = [10001, 19999]`},
		{Name: "gid_range", Kind: engine.AttrIntRange, Default: "gid equals uid",
			Doc: "Lowest and highest gid, when gids come from their own range instead of matching the uid."},
		{Name: "username", Kind: engine.AttrTemplate, Default: `"{{ msg.username }}"`,
			Doc: "Whose ids these are."},
	},
	Adds: func(c *engine.StepConfig) engine.Schema {
		lo, hi, _ := c.IntRange("uid_range")
		uid := engine.IntegerIn(lo, hi)
		if glo, ghi, ok := c.IntRange("gid_range"); ok {
			return engine.Schema{"uid": uid, "gid": engine.IntegerIn(glo, ghi)}
		}
		return engine.Schema{"uid": uid, "gid": uid}
	},
	AddsDoc:    "`uid` and `gid`, integers within their ranges",
	Idempotent: true,
	New:        newAllocateUID,
}

type allocateUID struct {
	uids     engine.IDRange
	gids     *engine.IDRange
	username *engine.Template
}

// maxID is the largest usable POSIX id; (uid_t)-1 means "no id".
const maxID = math.MaxUint32 - 1

func newAllocateUID(c *engine.StepConfig) (engine.Action, error) {
	a := &allocateUID{username: c.Template("username")}
	lo, hi, _ := c.IntRange("uid_range")
	if lo < 1 || hi > maxID {
		return nil, c.Errorf("uid_range", "Invalid uid range",
			"uids run from 1 to %d (0 is root, %d means no id).", int64(maxID), int64(maxID)+1)
	}
	a.uids = engine.IDRange{Lo: lo, Hi: hi}
	if lo, hi, ok := c.IntRange("gid_range"); ok {
		if lo < 1 || hi > maxID {
			return nil, c.Errorf("gid_range", "Invalid gid range", "gids run from 1 to %d.", int64(maxID))
		}
		a.gids = &engine.IDRange{Lo: lo, Hi: hi}
	}
	if a.username == nil {
		if _, ok := c.Schema["username"]; !ok {
			return nil, c.Errorf("username", "No username field",
				"The message block has no username field; set username = \"{{ msg.… }}\".")
		}
		a.username, _ = engine.CompileTemplate("{{ msg.username }}", c.Schema)
	}
	return a, nil
}

func (a *allocateUID) Run(ctx context.Context, c *engine.Call) error {
	user, err := c.Render(a.username)
	if err != nil {
		return err
	}
	if user == "" {
		return engine.Permanent(errors.New("username is empty"))
	}
	uid, gid, fresh, err := c.Svc.Store.AllocateIDs(ctx, user, a.uids, a.gids)
	if err != nil {
		return err
	}
	c.Set("uid", int(uid))
	c.Set("gid", int(gid))
	if fresh {
		c.Notef("uid %d, gid %d", uid, gid)
	} else {
		c.Notef("uid %d, gid %d (already reserved for %s)", uid, gid, user)
	}
	return nil
}
