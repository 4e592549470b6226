# One run reports every problem of a step: a broken rule does not hide the
# unknown fields beside it, and a repo that does not decode is not also
# reported empty.
message {
  username = string
  email    = string
}
pipeline "p" {
  on = ["request.*"]
  validate "check" {
    required = ["usrname"]
    emails   = ["mail"]
    rules = {
      "msg.username +" = "broken"
    }
    unique = { emial = "Email already exists" }
    owner  = ["usr"]
  }
  git_commit "rec" {
    repo = 42 + "x"
    path = "{{ msg.username }}.json"
  }
}
