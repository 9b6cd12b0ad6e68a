#!/usr/bin/env bash
# Makes the S3-compatible store offpeak's tests talk to real: `s3s-fs` (path-style S3 with SigV4,
# multipart, listing; objects kept as files, so they survive a restart of the server). Installs
# it with cargo once (about 4 minutes on 2 cores), starts it on loopback if the port is closed,
# and prints the environment to use. Idempotent: safe to run before every test run.
#
# Environment (all optional):
#   OFFPEAK_S3_PORT    port to listen on (default 9000)
#   OFFPEAK_S3_DIR     where objects are stored (default /var/tmp/offpeak-s3)
#   OFFPEAK_S3_LOG     the server's log file (default $OFFPEAK_S3_DIR.log)
#   S3S_FS_TARGET_DIR  cargo target dir for building s3s-fs (default: cargo's temporary one)
set -euo pipefail

S3S_FS_VERSION=0.14.1 # later versions need a newer rustc than the workspace toolchain
PORT="${OFFPEAK_S3_PORT:-9000}"
DATA_DIR="${OFFPEAK_S3_DIR:-/var/tmp/offpeak-s3}"
LOG_FILE="${OFFPEAK_S3_LOG:-$DATA_DIR.log}"
ACCESS_KEY=offpeak
SECRET_KEY=offpeak-secret
REGION=us-east-1

log() { printf '[s3] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1
  for _ in $(seq 1 60); do port_open "$port" && return 0; sleep 0.5; done
  log "s3s-fs did not open port $port; see $LOG_FILE"
  tail -n 20 "$LOG_FILE" >&2 || true
  return 1
}

# The binary: on PATH, in ~/.cargo/bin, or installed now.
find_s3s_fs() {
  local candidate
  for candidate in "$(command -v s3s-fs 2>/dev/null || true)" "$HOME/.cargo/bin/s3s-fs"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" --help >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

if ! S3S_FS="$(find_s3s_fs)"; then
  command -v cargo >/dev/null 2>&1 || { log "cargo is needed to install s3s-fs"; exit 1; }
  log "installing s3s-fs $S3S_FS_VERSION with cargo (a few minutes)"
  install_args=(install "s3s-fs@$S3S_FS_VERSION" --features binary --locked)
  if [ -n "${S3S_FS_TARGET_DIR:-}" ]; then
    install_args+=(--target-dir "$S3S_FS_TARGET_DIR")
  fi
  cargo "${install_args[@]}" >&2
  S3S_FS="$(find_s3s_fs)" || { log "s3s-fs was installed but does not run"; exit 1; }
fi

# s3s-fs 0.14.1 keeps object metadata as `.bucket-<b64 name>.object-<b64 key>.*.json` files in
# the root and leaves them behind when objects and buckets are deleted. Tests create and delete
# a bucket each, so drop the files of buckets that no longer exist (only while the server is
# down, so no bucket can be created under our feet).
prune_deleted_buckets() {
  local b64 name padded
  [ -d "$DATA_DIR" ] || return 0
  find "$DATA_DIR" -maxdepth 1 -name '.bucket-*.object-*' -printf '%f\n' |
    sed -e 's/^\.bucket-//' -e 's/\.object-.*$//' | sort -u |
    while IFS= read -r b64; do
      padded="$(printf '%s' "$b64" | tr '_-' '/+')"
      while [ $((${#padded} % 4)) -ne 0 ]; do padded="$padded="; done
      name="$(printf '%s' "$padded" | base64 -d 2>/dev/null)" || continue
      if [ -n "$name" ] && [ ! -d "$DATA_DIR/$name" ]; then
        find "$DATA_DIR" -maxdepth 1 -name ".bucket-$b64.object-*" -delete
      fi
    done
}

if port_open "$PORT"; then
  log "port $PORT already open; assuming it is s3s-fs"
else
  mkdir -p "$DATA_DIR" "$(dirname "$LOG_FILE")"
  prune_deleted_buckets
  log "starting s3s-fs on 127.0.0.1:$PORT (data in $DATA_DIR, log in $LOG_FILE)"
  # setsid + nohup: the server outlives this script and the shell that ran it. It runs from its
  # data directory, not from the caller's: s3s-fs resolves bucket paths against its working
  # directory, and answers 500 to everything once that is deleted (a removed checkout).
  DATA_DIR="$(cd "$DATA_DIR" && pwd)"
  LOG_FILE="$(cd "$(dirname "$LOG_FILE")" && pwd)/$(basename "$LOG_FILE")"
  (cd "$DATA_DIR" && exec setsid nohup "$S3S_FS" --host 127.0.0.1 --port "$PORT" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$DATA_DIR" \
    >>"$LOG_FILE" 2>&1 </dev/null) &
  wait_port "$PORT"
fi

log "s3s-fs on http://127.0.0.1:$PORT"
# For `eval "$(deploy/local/s3.sh)"`: what the tests and offpeak itself read.
cat <<EOF
export OFFPEAK_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT
export OFFPEAK_S3_ENDPOINT=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
EOF
