#!/usr/bin/env bash
# Runs every test of offpeak on a fresh machine: starts the services the tests need (NATS with
# JetStream, RabbitMQ, the s3s-fs S3-compatible store), installs the outside readers and clients
# they use, then builds and tests the whole workspace in one profile (release, the same one
# `cargo run --release` uses, so nothing is built twice).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh
eval "$(bash deploy/local/s3.sh)"
bash deploy/local/python-deps.sh
cargo test --release --workspace --locked "$@"
