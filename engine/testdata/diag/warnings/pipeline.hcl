# Legal but probably wrong: each is a warning, and the file still loads.
message {
  username  = string
  queuename = string
}

consumer "web_form" {
  on = ["completed.*"]
}

pipeline "loop" {
  on = ["retry.*"]

  publish "again" {
    routing_key = "retry.{{ msg.queuename }}"
  }
}

pipeline "typo" {
  on = ["request.*"]

  publish "answer" {
    routing_key = "complete.{{ msg.queuename }}"
  }

  log_event "never" {
    when = "false"
  }

  publish "reply" {
    routing_key = "completed.{{ msg.queuename }}"
  }
}

pipeline "audit" {
  on = ["#"]
  log_event "all" {}
}

pipeline "account" {
  on = ["verify.*"]

  exec "create" {
    command = ["/nonexistent/mkaccount", "{{ msg.username }}"]
  }

  publish "reply" {
    routing_key = "completed.{{ msg.queuename }}"
  }
}
