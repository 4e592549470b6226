# C19: conditions over missing fields and non-boolean conditions.
message {
  username = string
  reason   = string
  uid      = integer
}

pipeline "register" {
  on = ["request.*"]

  log_event "typo" {
    when = "msg.reson == 'x'"
  }

  log_event "not_bool" {
    when = "msg.uid"
  }

  log_event "unknown_name" {
    when = "reason == 'x'"
  }

  log_event "type" {
    when = "msg.username > 3"
  }
}
