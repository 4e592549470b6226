#!/usr/bin/env bash
# Runs every test, the integration tests included, against a real RabbitMQ
# and a real SMTP server (Mailpit), starting them when they are not running
# and stopping afterwards what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

started_here=
if [ ! -f .services/rabbitmq.started ] && [ ! -f .services/mailpit.pid ]; then
	started_here=1
fi
cleanup() { [ -n "$started_here" ] && scripts/services.sh stop; }
trap cleanup EXIT

scripts/services.sh start rabbitmq mailpit

export REGFLOW_TEST_AMQP_URL=${REGFLOW_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
export REGFLOW_TEST_SMTP_ADDR=${REGFLOW_TEST_SMTP_ADDR:-127.0.0.1:1025}
export REGFLOW_TEST_MAILPIT_HTTP=${REGFLOW_TEST_MAILPIT_HTTP:-127.0.0.1:8025}

go vet -tags "integration fault" ./...
go test -tags integration -count=1 "${@:-./...}"

if [ $# -eq 0 ]; then
	# The fault tests restart the broker and kill regflow: alone, after
	# everything else.
	go test -tags fault -count=1 -p 1 -timeout 20m ./fault/

	# A short round of each fuzzer; make fuzz runs them longer.
	FUZZTIME=${FUZZTIME:-10s}
	for target in FuzzLoad FuzzDecodeMessage; do
		go test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s ./engine
	done
fi
