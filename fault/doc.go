// Package fault holds regflow's fault tests, behind the build tag
// "fault": they kill regflow, restart RabbitMQ and take the SMTP server
// away. scripts/test.sh runs them on their own after the other tests.
package fault
