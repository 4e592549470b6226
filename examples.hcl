# examples.hcl — a commented tour of every block, action and option of
# regflow's pipeline language. It loads as it is: regflow validate
# examples.hcl. docs/reference.md lists every attribute with its default.
#
# Two languages meet here. HCL is the static configuration, read once when
# regflow starts; its functions env(NAME, DEFAULT) and file(PATH) run then.
# expr (https://expr-lang.org) is the only run-time language: `when`
# conditions are expr programs over `msg`, the message, and any string may
# embed {{ expr }}, rendered per message. HCL leaves {{ }} alone; its own
# ${ } would run at load time, when there is no message yet.

# broker: where the pipelines' queues live. At most one per configuration.
broker {
  # --amqp-url and REGFLOW_AMQP_URL take precedence over this.
  url = env("REGFLOW_AMQP_URL", "amqp://guest:guest@localhost:5672/")

  # The topic exchange every pipeline binds to and publishes on.
  exchange = "RegUsr"

  # Deliveries a pipeline works on at once (AMQP prefetch).
  prefetch = 32

  # Prepended to every queue name: two environments on one vhost.
  queue_prefix = ""

  # Messages that can never succeed go to this fanout exchange and the
  # durable queue of the same name (queue_prefix included).
  dead_letter = "RegUsr.dead"

  # Bodies larger than this many bytes are dead-lettered unread.
  max_body = 1048576

  # The broker's consumer_timeout: a retrying step gives up in time for
  # the delivery to be acknowledged within it.
  consumer_timeout = "30m"
}

# store: one SQLite file holds reserved ids, claimed unique values, the
# event log's rows and the step journal.
store {
  path = "var/regflow.db"
}

# mail: how send_email and subscribe_list deliver.
mail {
  # smtp://user:password@host:587 requires STARTTLS; smtps://host:465 is
  # TLS from the start; ?tls=none is for a relay on localhost. Empty: every
  # mail becomes an .eml file in the outbox.
  smtp   = env("REGFLOW_SMTP_URL", "")
  outbox = "var/outbox"
  from   = "Research Computing <rc-accounts@example.edu>"
}

# message: the fields a message may carry and their types. Conditions and
# templates are checked against them when the file loads, and an incoming
# message whose field has the wrong type is refused naming the field.
# Types: string, number, integer, integer(LOW, HIGH), bool, list(TYPE),
# object, any. Every message also carries errmsg (list(string)) and
# success (bool), which the engine keeps. An absent field is nil.
message {
  username  = string
  queuename = string
  email     = string
  fullname  = string
  reason    = string
  groups    = list(string)
  uid       = integer(0, 4294967294)
  gid       = integer(0, 4294967294)
  notified  = bool
  account   = string
}

# consumer "NAME": a program outside regflow that reads keys from the
# exchange. Declaring it tells validate that a publish to those keys is
# read by someone; it binds no queue.
consumer "tour_form" {
  description = "The web form that waits for tour.completed.<q>."
  on          = ["tour.completed.*"]
}

# track "NAME": follow one registration across its messages. It opens on
# a start key, is answered by the first publication on a finish key (a
# second answer is not published), and when the deadline passes first,
# on_timeout answers it once. regflow status shows what each waits for.
track "tour" {
  id       = "{{ msg.username }}"
  start    = ["tour.request.*"]
  finish   = ["tour.completed.*"]
  deadline = "5m"

  on_timeout {
    publish "late" {
      routing_key = "tour.completed.{{ msg.queuename }}"
    }
  }
}

# pipeline "NAME": a chain of steps bound to routing-key patterns. Its
# durable queue is named after it (plus queue_prefix). Steps run in the
# order written; each step block is `ACTION "STEP_NAME" { … }`.
pipeline "tour_request" {
  description = "Every action once, in the order a registration needs them."

  # Patterns: "*" is one word, "#" any number of words.
  on = ["tour.request.*"]

  # The durable queue's name, after queue_prefix; the pipeline's name when
  # left out.
  queue = "tour-request"

  # Only one regflow process consumes this queue at a time; the others
  # stand by. For single-writer state across hosts.
  single_active_consumer = true

  # This pipeline's own prefetch.
  prefetch = 8

  # validate: refuse bad input before anything changes.
  validate "check" {
    required      = ["username", "queuename", "email", "fullname"]
    absent        = ["uid", "gid"] # what later steps add
    usernames     = ["username"]   # portable POSIX user names
    reserved      = ["root", "admin", "nobody"]
    emails        = ["email"]     # one bare address each
    routing_words = ["queuename"] # usable as one routing-key word
    multiline     = ["reason"]    # may hold line breaks
    max_length    = 256           # characters in any other string field
    max_multiline = 4096          # characters in a multiline field
    rules = {
      "msg.queuename == queuename(msg.username)" = "queuename: must be the encoded username"
      "len(msg.fullname) <= 200"                 = "fullname: at most 200 characters"
    }
    unique = { email = "Email already exists" }
    owner  = ["username"] # who a unique value belongs to
  }

  # allocate_uid: the same user always gets the same ids; adds uid, gid.
  allocate_uid "ids" {
    uid_range = [20001, 29999]
    gid_range = [20001, 29999] # leave out: gid equals uid
    username  = "{{ msg.username }}"
  }

  # exec: a site command from an argument list, never a shell. Every
  # step takes when, on_error, timeout, once and a retry block.
  exec "account" {
    command  = ["/bin/echo", "created", "{{ msg.username }}", "{{ msg.uid }}"]
    env      = { ACCOUNT_UID = "{{ msg.uid }}" }
    dir      = "var"     # where it runs; the working directory by default
    output   = "account" # the trimmed standard output goes here
    timeout  = "30s"
    on_error = "continue" # record the error in errmsg and go on

    retry {
      attempts    = 3 # in all, the first included; transient errors only
      backoff     = "1s"
      max_backoff = "10s"
    }
  }

  # git_commit: write a file into a repository and commit it.
  git_commit "record" {
    repo    = "var/tour-users"
    path    = "users/{{ msg.username }}.json"
    content = "{{ toJSON({'username': msg.username, 'uid': msg.uid, 'gid': msg.gid}) }}\n"
    message = "Add user {{ msg.username }} ({{ msg.fullname }})"
    author  = "regflow <regflow@example.edu>"
    push    = false
    remote  = "origin"
    branch  = "main"
  }

  # subscribe_list: one LISTSERV command line per list, by mail.
  subscribe_list "lists" {
    when   = "msg.reason != 'test'"
    lists  = ["hpc-announce"]
    server = "listserv@lists.example.edu"
    email  = "{{ msg.email }}"
    name   = "{{ msg.fullname }}"
    from   = "rc-accounts@example.edu" # the list server accepts commands from it
    quiet  = true
    once   = "lists:{{ msg.username }}" # once per user, not per message
  }

  # send_email: a templated plain-text mail.
  send_email "welcome" {
    to       = ["{{ msg.email }}"]
    cc       = []
    bcc      = ["rc-archive@example.edu"]
    from     = "Research Computing <rc-accounts@example.edu>"
    reply_to = "rc-help@example.edu"
    subject  = "Welcome, {{ msg.username }}"
    once     = "welcome:{{ msg.username }}"
    # <<-EOT removes the indentation common to every line.
    body = <<-EOT
      Dear {{ msg.fullname }},

      your account {{ msg.username }} has uid {{ msg.uid }}.
    EOT
  }

  # log_event: a JSON line in the event log and a row in the store.
  log_event "audit" {
    path   = "var/log/tour.log"
    fields = ["username", "uid", "gid"]
  }

  # publish: the message, or a shaped copy, persistent and confirmed.
  publish "done" {
    routing_key = "tour.completed.{{ msg.queuename }}"
    exchange    = "RegUsr"
    omit        = ["account"]
    set         = { notified = "false" }
  }

  # on_failure: runs when a step without on_error = "continue" fails, so
  # the sender still gets an answer.
  on_failure {
    publish "reply" {
      routing_key = "tour.completed.{{ msg.queuename }}"
      fields      = ["username", "queuename", "email", "errmsg", "success"]
    }
  }
}

pipeline "tour_audit" {
  on = ["tour.#"]

  # Acknowledge messages for which this is false without running a step.
  when = "routing_key startsWith 'tour.completed.'"

  # Deliver messages that do not match the message block, too.
  check_message = false

  log_event "everything" {
    path = "var/log/tour-completed.log"
  }
}
