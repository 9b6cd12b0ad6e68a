#!/usr/bin/env bash
# Makes the services offpeak's tests talk to real: NATS with JetStream and RabbitMQ (Debian's
# packages; installed if missing, started if down), and the tools the report and monitoring tests
# run (Chromium, promtool). Idempotent: safe to run before every test run.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 120); do port_open "$port" && return 0; sleep 0.5; done
  log "$name did not open port $port"; return 1
}

apt_updated=""
need_pkg() {
  local bin=$1 pkg=$2
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] && return 0
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  log "installing $pkg"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$pkg" >/dev/null
}

# NATS with JetStream on 127.0.0.1:4222.
if ! port_open 4222; then
  need_pkg nats-server nats-server
  log "starting nats-server (JetStream)"
  $SUDO mkdir -p /var/lib/nats-server
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 nats-server
fi

# RabbitMQ on 127.0.0.1:5672 (guest/guest).
if ! port_open 5672; then
  need_pkg rabbitmq-server rabbitmq-server
  log "starting rabbitmq-server"
  $SUDO rabbitmq-server -detached || true
  wait_port 5672 rabbitmq-server
fi

# Tools the report and monitoring tests run (issue #16): headless Chromium opens the HTML
# report, promtool checks the alert rules. Without recommends: nothing here is a service.
need_tool() {
  local bin=$1 pkg=$2
  command -v "$bin" >/dev/null 2>&1 && return 0
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  log "installing $pkg"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}
need_tool chromium chromium
need_tool promtool prometheus

log "NATS on 127.0.0.1:4222, RabbitMQ on 127.0.0.1:5672"
