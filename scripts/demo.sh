#!/usr/bin/env bash
# The registration workflow end to end: starts RabbitMQ (installing it when
# missing), runs regflow on pipelines/ in a fresh directory .demo/, submits
# two registrations, one that succeeds and one refused for a duplicate
# email, shows what happened, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

HEALTH_PORT=${REGFLOW_DEMO_HEALTH_PORT:-8086}
started_broker=
[ -f .services/rabbitmq.started ] || started_broker=1
regflow_pid=

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	if [ -n "$regflow_pid" ] && kill -0 "$regflow_pid" 2>/dev/null; then
		kill -TERM "$regflow_pid"
		wait "$regflow_pid" || true
	fi
	if [ -n "$started_broker" ]; then
		"$top/scripts/services.sh" stop rabbitmq
	fi
}
trap cleanup EXIT

step "RabbitMQ"
scripts/services.sh start rabbitmq

# ready asks regflow's health endpoint whether it is consuming.
ready() {
	exec 3<>"/dev/tcp/127.0.0.1/$HEALTH_PORT" || return 1
	printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
	grep -q '200 OK' <&3
	local ok=$?
	exec 3<&-
	return $ok
}

step "regflow run pipelines/   (in .demo/, log in .demo/regflow.log)"
# Another process answering on the health port would pass for this
# regflow; refuse to start rather than talk to it.
if ready 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$HEALTH_PORT") 2>/dev/null; then
	echo "port $HEALTH_PORT is taken, perhaps by another regflow run; stop it, or set REGFLOW_DEMO_HEALTH_PORT" >&2
	exit 1
fi
rm -rf .demo
mkdir -p .demo
cd .demo
"$top/bin/regflow" run "$top/pipelines" --health-addr "127.0.0.1:$HEALTH_PORT" >regflow.log 2>&1 &
regflow_pid=$!
for _ in $(seq 1 100); do
	kill -0 "$regflow_pid" 2>/dev/null || { cat regflow.log; exit 1; }
	ready 2>/dev/null && break
	sleep 0.1
done
kill -0 "$regflow_pid" 2>/dev/null || { cat regflow.log; exit 1; }
ready 2>/dev/null || { echo "regflow did not become ready"; cat regflow.log; exit 1; }
cat regflow.log

step "regflow request ana.lima   (a new user: succeeds)"
"$top/bin/regflow" request ana.lima --email ana.lima@example.org --fullname "Ana Lima" \
	--reason "PhD thesis on coastal erosion" --timeout 30s

step "regflow request alima   (the same email again: refused)"
"$top/bin/regflow" request alima --email ana.lima@example.org --fullname "A. Lima" \
	--reason "second account" --timeout 30s || echo "(exit status $?: the registration failed, as it should)"

# The welcome mail and the admin report follow completed.<q>; give the
# notify pipeline a moment.
for _ in $(seq 1 50); do
	[ "$(ls var/outbox 2>/dev/null | wc -l)" -ge 3 ] && break
	sleep 0.1
done

step "git log of the user records (var/users)"
git -C var/users log --stat --format='commit %h  %an  %ad%n    %s' --date=iso

step "the welcome mail in the outbox (var/outbox)"
welcome=$(grep -l '^Subject: Your research computing account' var/outbox/*.eml | head -n1)
echo "$welcome"
sed 's/^/    /' "$welcome"

step "the event log (var/log/user_reg.log), one JSON line per message"
sleep 0.3
cut -c1-160 var/log/user_reg.log

step "stopping regflow (SIGTERM drains the messages in flight)"
kill -TERM "$regflow_pid"
wait "$regflow_pid"
regflow_pid=
tail -n 3 regflow.log
