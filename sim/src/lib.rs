//! Provider simulator: OpenAI- and Anthropic-compatible HTTP server with scripted latency, errors, rate limits, outages and prices.
