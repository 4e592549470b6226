# A dozen different mistakes, each reported at its place with a fix.
broker {
  exchange = "RegUsr"
  prefetch = 0
}

message {
  username = string
  email    = strng
  uid      = integer(10, 5)
}

mail {
  smtp = "smtp://user:secret@mail.example.org:25?tls=none"
}

pipelin "typo" {
}

pipeline "register" {
  on = ["request..x", "a.b*"]

  allocate_uid "ids" {
    uid_range = [19999, 10001]
  }

  publish "verify" {
    routing_key = "verify.${msg.username}"
  }

  publish "empty" {
    routing_key = "completed."
  }

  send_email "welcome" {
    to       = ["{{ msg.email }}"]
    subject  = "Hello {{ msg.usrname }}"
    body     = "Your uid is {{ msg.uid + }}"
    on_error = "contine"
    timeout  = "soon"
  }

  validate "early" {
    required = ["username"]
    when     = "msg.account != ''"
  }

  exec "mk" {
    command = ["{{ msg.username }}", "x"]
    output  = "account"
  }

  exec "again" {
    command = ["/bin/true"]
    retry {
      attempts = 0
    }
  }

  log_event "nested" {
    publish "inner" {
      routing_key = "x"
    }
  }
}
