//! Provider clients, the cost-first router, deferral and retry policy, rate limiters, circuit breakers and the Parquet results sink.
