# A syntax error cuts pipeline "q" short: only the error itself is
# reported there, not the "on" the parser never reached. Pipeline "p" is
# whole and really lacks its "on".
pipeline "p" {
  log_event "x" {
  }
}
pipeline "q" {
  log_event "x" {
    path = "a" +
  }
}
