# regflow — make demo runs the registration workflow end to end on a local
# RabbitMQ; make test runs every test against a real RabbitMQ, SMTP server
# and git.

GO      ?= go
BIN     := bin/regflow
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build demo test fuzz bench unit services stop-services clean help

all: build

## build: compile bin/regflow
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/regflow

## demo: install and start RabbitMQ if needed, run pipelines/, submit two registrations
demo: build
	scripts/demo.sh

## test: unit and integration tests (starts RabbitMQ and Mailpit when they are not running)
test:
	scripts/test.sh

## fuzz: the loader and message fuzzers, five minutes each (FUZZTIME=…)
fuzz:
	for t in FuzzLoad FuzzDecodeMessage; do \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $${FUZZTIME:-5m} -fuzzminimizetime 30s ./engine || exit 1; \
	done

## bench: ceiling, passthrough, workflow, simulate and memory, side by side (bench/results.json)
bench:
	scripts/services.sh start rabbitmq
	$(GO) run ./bench

## unit: the tests that need no services
unit:
	$(GO) test ./...

## services: start RabbitMQ and Mailpit and leave them running
services:
	scripts/services.sh start rabbitmq mailpit

## stop-services: stop what "make services" started
stop-services:
	scripts/services.sh stop

clean:
	rm -rf bin .demo

help:
	@sed -n 's/^## //p' Makefile
