# C17: an attribute set twice, a misspelt attribute and two steps with the
# same name, all in one pipeline. Every problem is reported in one run.
message {
  username = string
  reason   = string
}

pipeline "register" {
  on = ["request.*"]
  on = ["verify.*"]

  validate "check" {
    required = ["username"]
    condtion = "msg.reason != 'test'"
  }

  log_event "check" {
  }
}
