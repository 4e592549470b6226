#!/usr/bin/env bash
# Installs and starts the services regflow's demo and tests use, and stops
# the ones it started.
#
#   scripts/services.sh start rabbitmq [mailpit]
#   scripts/services.sh stop [rabbitmq] [mailpit]
#
# RabbitMQ comes from the system's package manager (apt on Debian and
# Ubuntu, brew on macOS); Mailpit, a real SMTP server with an HTTP API, from
# the Go module proxy. A service that is already listening is used as it is
# and left running; one this script started is recorded under .services/
# and stopped by "stop".
set -euo pipefail

cd "$(dirname "$0")/.."
state=.services
mkdir -p "$state"

AMQP_PORT=${REGFLOW_AMQP_PORT:-5672}
SMTP_ADDR=${REGFLOW_TEST_SMTP_ADDR:-127.0.0.1:1025}
MAILPIT_HTTP=${REGFLOW_TEST_MAILPIT_HTTP:-127.0.0.1:8025}
MAILPIT_VERSION=v1.33.1

say() { printf '%s\n' "$*" >&2; }

# as_root runs a command as root, through sudo when needed.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# listening HOST PORT: whether something accepts connections there.
listening() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() { # HOST PORT SECONDS WHAT
	local i
	for ((i = 0; i < $3 * 5; i++)); do
		listening "$1" "$2" && return 0
		sleep 0.2
	done
	say "$4 did not start listening on $1:$2 within $3s"
	return 1
}

install_rabbitmq() {
	command -v rabbitmq-server >/dev/null 2>&1 && return 0
	[ -x /usr/sbin/rabbitmq-server ] && return 0
	if command -v apt-get >/dev/null 2>&1; then
		say "installing RabbitMQ with apt-get"
		as_root apt-get update -q
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server
	elif command -v brew >/dev/null 2>&1; then
		say "installing RabbitMQ with brew"
		brew install rabbitmq
	else
		say "cannot install RabbitMQ: no apt-get or brew; install it and run this again"
		return 1
	fi
}

start_rabbitmq() {
	if listening 127.0.0.1 "$AMQP_PORT"; then
		say "RabbitMQ is already running on port $AMQP_PORT"
		return 0
	fi
	install_rabbitmq
	say "starting RabbitMQ"
	if command -v brew >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
		"$(brew --prefix)/sbin/rabbitmq-server" -detached
	else
		as_root rabbitmq-server -detached
	fi
	touch "$state/rabbitmq.started"
	# The AMQP listener opens at the end of the boot.
	wait_port 127.0.0.1 "$AMQP_PORT" 120 RabbitMQ
}

stop_rabbitmq() {
	[ -f "$state/rabbitmq.started" ] || return 0
	say "stopping the RabbitMQ this script started"
	as_root rabbitmqctl -q stop >/dev/null 2>&1 || true
	rm -f "$state/rabbitmq.started"
}

mailpit_bin() {
	local bin
	bin="$(go env GOPATH)/bin/mailpit"
	if [ ! -x "$bin" ]; then
		say "installing Mailpit $MAILPIT_VERSION with go install"
		go install "github.com/axllent/mailpit@$MAILPIT_VERSION"
	fi
	printf '%s\n' "$bin"
}

start_mailpit() {
	if listening "${SMTP_ADDR%:*}" "${SMTP_ADDR##*:}"; then
		say "an SMTP server is already listening on $SMTP_ADDR"
		return 0
	fi
	local bin
	bin=$(mailpit_bin)
	say "starting Mailpit (SMTP $SMTP_ADDR, API $MAILPIT_HTTP)"
	nohup "$bin" --disable-version-check --smtp "$SMTP_ADDR" --listen "$MAILPIT_HTTP" \
		--smtp-auth-accept-any --smtp-auth-allow-insecure --max 0 \
		>"$state/mailpit.log" 2>&1 &
	echo $! >"$state/mailpit.pid"
	wait_port "${MAILPIT_HTTP%:*}" "${MAILPIT_HTTP##*:}" 30 Mailpit
}

stop_mailpit() {
	[ -f "$state/mailpit.pid" ] || return 0
	say "stopping Mailpit"
	kill "$(cat "$state/mailpit.pid")" 2>/dev/null || true
	rm -f "$state/mailpit.pid"
}

case "${1:-}" in
start)
	shift
	for s in "${@:-rabbitmq}"; do
		case $s in
		rabbitmq) start_rabbitmq ;;
		mailpit) start_mailpit ;;
		*) say "unknown service $s"; exit 2 ;;
		esac
	done
	;;
stop)
	shift
	for s in "${@:-mailpit rabbitmq}"; do
		for one in $s; do
			case $one in
			rabbitmq) stop_rabbitmq ;;
			mailpit) stop_mailpit ;;
			*) say "unknown service $one"; exit 2 ;;
			esac
		done
	done
	;;
*)
	say "usage: $0 start rabbitmq|mailpit... | stop [rabbitmq|mailpit...]"
	exit 2
	;;
esac
