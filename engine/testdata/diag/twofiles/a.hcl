message {
  username = string
}

pipeline "log" {
  on = ["#"]
  log_event "log" {}
}
