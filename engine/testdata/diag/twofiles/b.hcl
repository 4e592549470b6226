message {
  email = string
}

pipeline "log" {
  on = ["#"]
  log_event "log" {}
}
