# The account-registration workflow on the RegUsr topic exchange.
#
#   request.<q>   → get_next_uid_gid: validate, reserve uid/gid → verify.<q>
#   verify.<q>    → provision: git record, mailing lists        → completed.<q>
#   completed.<q> → notify: welcome mail, admin report          → notify.<q>
#   every key     → event_log: one JSON line per message in user_reg.log
#
# <q> is the username made safe for a routing key: ana.lima → ana%2Elima.
# Relative paths resolve against the directory regflow runs in.

broker {
  url          = env("REGFLOW_AMQP_URL", "amqp://guest:guest@localhost:5672/")
  exchange     = env("REGFLOW_EXCHANGE", "RegUsr")
  queue_prefix = env("REGFLOW_QUEUE_PREFIX", "")
}

store {
  path = env("REGFLOW_DB", "var/regflow.db")
}

mail {
  smtp   = env("REGFLOW_SMTP_URL", "") # empty: .eml files in the outbox
  outbox = "var/outbox"
  from   = "Research Computing <rc-accounts@example.edu>"
}

message {
  username   = string
  queuename  = string
  email      = string
  fullname   = string
  reason     = string
  updated_by = string
  host       = string
  uid        = integer(0, 4294967294) # (uid_t)-1 means "no id"
  gid        = integer(0, 4294967294)
  notified   = bool
}

# Programs outside regflow that read from the exchange. regflow declares
# nothing for them; validate and graph use this to know who reads a key.
consumer "web_form" {
  description = "The registration web form and regflow request wait for the answer."
  on          = ["completed.*", "notify.*"]
}

# Every registration is answered exactly once: by the pipelines, or, when
# the deadline passes first, by on_timeout. A later answer is recorded
# (regflow status) but not published.
track "registration" {
  id       = "{{ msg.username }}"
  start    = ["request.*"]
  finish   = ["completed.*"]
  deadline = env("REGFLOW_DEADLINE", "5m")

  on_timeout {
    publish "reply" {
      routing_key = "completed.{{ msg.queuename }}"
    }
  }
}

pipeline "get_next_uid_gid" {
  description            = "Check a request and reserve the user's uid and gid."
  on                     = ["request.*"]
  single_active_consumer = true

  validate "request" {
    required      = ["username", "queuename", "email", "fullname"]
    absent        = ["uid", "gid", "errmsg", "notified"] # added by later steps
    usernames     = ["username"]
    emails        = ["email"]
    routing_words = ["queuename"]
    multiline     = ["reason"]
    rules = {
      "msg.queuename == queuename(msg.username)" = "queuename: must be the username encoded for a routing key"
    }
    # A username and its address stay paired: the same request may come
    # again, but neither may be registered with another partner.
    unique = { username = "Username already exists", email = "Email already exists" }
    owner  = ["username", "email"]
  }

  allocate_uid "ids" {
    uid_range = [10001, 19999]
  }

  publish "verify" {
    routing_key = "verify.{{ msg.queuename }}"
  }

  on_failure {
    publish "reply" {
      routing_key = "completed.{{ msg.queuename }}"
    }
  }
}

pipeline "provision" {
  description = "Record the account in git and subscribe the user to the lists."
  on          = ["verify.*"]

  git_commit "record" {
    repo     = env("REGFLOW_USERS_REPO", "var/users")
    path     = "users/{{ msg.username }}.json"
    message  = "Add user {{ msg.username }} ({{ msg.fullname }})"
    on_error = "continue"

    retry { # another git process holding the index, a push race
      attempts = 4
      backoff  = "500ms"
    }
  }

  subscribe_list "lists" {
    when     = "msg.reason != 'test'"
    lists    = ["hpc-announce", "hpc-users"]
    server   = env("REGFLOW_LISTSERV", "listserv@lists.example.edu")
    once     = "lists:{{ msg.username }}"
    on_error = "continue"

    retry { # SMTP 4xx replies and timeouts; 5xx replies are not retried
      attempts    = 6
      backoff     = "2s"
      max_backoff = "30s"
    }
  }

  publish "done" {
    routing_key = "completed.{{ msg.queuename }}"
  }

  on_failure {
    publish "reply" {
      routing_key = "completed.{{ msg.queuename }}"
    }
  }
}

pipeline "notify" {
  description = "Welcome the new user and tell the administrators."
  on          = ["completed.*"]
  when        = "msg.success"

  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    subject = "Your research computing account {{ msg.username }}"
    once    = "welcome:{{ msg.username }}"

    retry {
      attempts    = 6
      backoff     = "2s"
      max_backoff = "30s"
    }

    body = <<-EOT
      Dear {{ msg.fullname }},

      your account {{ msg.username }} is ready (uid {{ msg.uid }}, gid {{ msg.gid }}).
      Log in at hpc.example.edu with your university password.

      Research Computing
    EOT
  }

  send_email "report" {
    to      = [env("REGFLOW_ADMIN_EMAIL", "rc-admin@example.edu")]
    subject = "New account {{ msg.username }} ({{ msg.uid }})"
    once    = "report:{{ msg.username }}"

    retry {
      attempts    = 6
      backoff     = "2s"
      max_backoff = "30s"
    }

    body = <<-EOT
      User:    {{ msg.username }} ({{ msg.fullname }})
      Email:   {{ msg.email }}
      uid/gid: {{ msg.uid }}/{{ msg.gid }}
      Reason:  {{ msg.reason }}
    EOT
  }

  publish "notified" {
    routing_key = "notify.{{ msg.queuename }}"
    set         = { notified = "true" }
  }
}

pipeline "event_log" {
  description   = "Record every message on the exchange."
  on            = ["#"]
  check_message = false

  log_event "log" {
    path = env("REGFLOW_EVENT_LOG", "var/log/user_reg.log")
  }
}
