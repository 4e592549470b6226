# Tests of the registration workflow: regflow test pipelines
#
# Each test runs in a sandbox of its own: a fresh store, git repository and
# outbox, nothing sent, exec never run. setup messages run first in the
# same sandbox; stub gives a step a canned result.

test "a new user is registered, told, and the admins get a report" {
  key = "request.ana%2Elima"
  message = {
    username  = "ana.lima"
    queuename = "ana%2Elima"
    email     = "ana.lima@example.org"
    fullname  = "Ana Lima"
    reason    = "PhD thesis"
  }

  expect {
    publish "verify.ana%2Elima" {
      uid = 10001
      gid = 10001
    }
    publish "completed.ana%2Elima" {
      success = true
      errmsg  = []
      uid     = 10001
    }
    publish "notify.ana%2Elima" {
      notified = true
    }
    step "provision/record" {
      status = "ok"
      note   = "committed users/ana.lima.json"
    }
    mails = 3
    mail {
      to   = ["listserv@lists.example.edu"]
      body = "QUIET ADD hpc-users ana.lima@example.org Ana Lima"
    }
    mail {
      to      = ["ana.lima@example.org"]
      subject = "Your research computing account ana.lima"
      body    = "your account ana.lima is ready (uid 10001, gid 10001)"
    }
    mail {
      to      = ["rc-admin@example.edu"]
      subject = "New account ana.lima (10001)"
    }
  }
}

test "a second account with the same email is refused" {
  setup {
    key = "request.ana%2Elima"
    message = {
      username  = "ana.lima"
      queuename = "ana%2Elima"
      email     = "ana.lima@example.org"
      fullname  = "Ana Lima"
    }
  }

  key = "request.alima"
  message = {
    username  = "alima"
    queuename = "alima"
    email     = "ana.lima@example.org"
    fullname  = "A. Lima"
  }

  expect {
    publish "completed.alima" {
      success = false
      errmsg  = ["request: Email already exists"]
    }
    no_publish = ["verify.alima", "notify.alima"]
    pipeline "get_next_uid_gid" {
      status = "failed"
      errmsg = ["request: Email already exists"]
    }
    mails = 0
  }
}

test "a taken username with another email is refused" {
  setup {
    key = "request.ana%2Elima"
    message = {
      username  = "ana.lima"
      queuename = "ana%2Elima"
      email     = "ana.lima@example.org"
      fullname  = "Ana Lima"
    }
  }

  key = "request.ana%2Elima"
  message = {
    username  = "ana.lima"
    queuename = "ana%2Elima"
    email     = "someone.else@example.org"
    fullname  = "Someone Else"
  }

  expect {
    publish "completed.ana%2Elima" {
      success = false
      errmsg  = ["request: Username already exists"]
    }
    no_publish = ["verify.ana%2Elima"]
    mails      = 0
  }
}

test "a username that is not a POSIX name is refused" {
  key = "request.2024lab"
  message = {
    username  = "2024lab"
    queuename = "2024lab"
    email     = "lab@example.org"
    fullname  = "The Lab"
  }

  expect {
    publish "completed.2024lab" {
      success = false
      errmsg  = ["request: username: must begin with a lowercase letter or underscore, not '2'"]
    }
    no_publish = ["verify.2024lab"]
  }
}

test "a failing list subscription fails the registration but keeps the account record" {
  key = "request.bo"
  message = {
    username  = "bo"
    queuename = "bo"
    email     = "bo@example.org"
    fullname  = "Bo Berg"
    reason    = "course"
  }

  stub "provision/lists" {
    error = "smtp listserv.example.edu:587: 451 try again later"
  }

  expect {
    step "provision/lists" {
      status = "failed"
    }
    publish "completed.bo" {
      success = false
      uid     = 10001
      errmsg  = ["lists: smtp listserv.example.edu:587: 451 try again later"]
    }
    step "provision/record" {
      status = "ok"
    }
    no_publish = ["notify.bo"]
    mails      = 0
  }
}

test "a test request is not subscribed to the lists" {
  key = "request.tester"
  message = {
    username  = "tester"
    queuename = "tester"
    email     = "tester@example.org"
    fullname  = "Test Account"
    reason    = "test"
  }

  expect {
    step "provision/lists" {
      status = "skipped"
    }
    publish "completed.tester" {
      success = true
    }
    mails = 2
  }
}

test "a uid sent as a string is refused naming the field" {
  key = "verify.ana"
  message = {
    username  = "ana"
    queuename = "ana"
    email     = "ana@example.org"
    fullname  = "Ana"
    uid       = "10042"
    gid       = 10042
  }

  expect {
    pipeline "provision" {
      status = "refused"
      errmsg = ["uid: expected integer, got string"]
    }
    publish "completed.ana" {
      success = false
      errmsg  = ["uid: expected integer, got string"]
    }
  }
}

test "the same request twice gets the same ids and no second welcome" {
  setup {
    key = "request.ana%2Elima"
    message = {
      username  = "ana.lima"
      queuename = "ana%2Elima"
      email     = "ana.lima@example.org"
      fullname  = "Ana Lima"
    }
  }

  key = "request.ana%2Elima"
  message = {
    username  = "ana.lima"
    queuename = "ana%2Elima"
    email     = "ana.lima@example.org"
    fullname  = "Ana Lima"
  }

  expect {
    publish "completed.ana%2Elima" {
      success = true
      uid     = 10001
    }
    step "provision/record" {
      note = "already committed"
    }
    mails = 0
  }
}
