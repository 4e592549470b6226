# Queue and exchange names the broker would refuse, or that would loop.
broker {
  exchange    = "RegUsr"
  dead_letter = "RegUsr.dead"
}

pipeline "eats_dead_letters" {
  on    = ["#"]
  queue = "RegUsr.dead"

  log_event "log" {}
}

pipeline "reserved" {
  on    = ["a.*"]
  queue = "amq.mine"

  log_event "log" {}
}

pipeline "blank" {
  on    = ["b.*"]
  queue = " "

  log_event "log" {}
}
