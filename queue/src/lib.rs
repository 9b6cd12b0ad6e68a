//! One interface over brokers (publish, consume, ack, defer, dead-letter) with an in-process backend for local mode.
