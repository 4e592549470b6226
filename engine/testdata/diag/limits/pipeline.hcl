# Settings that parse but could never work at run time.
message {
  username = string
  uid      = integer
  success  = string
}

pipeline "x/y" {
  on       = ["request.*"]
  prefetch = -5

  validate "check" {
    usernames  = ["uid"]
    max_length = -1
  }
}

pipeline "" {
  on = ["verify.*"]

  log_event "a b" {}
}

consumer "form/reader" {
  on = ["completed.*"]
}

# Pipeline "x/y" has errors of its own; its queue still counts.
pipeline "other" {
  on    = ["other.*"]
  queue = "x/y"

  log_event "log" {}
}
