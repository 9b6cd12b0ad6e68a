"""Reads an offpeak run's Parquet results with pyarrow and DuckDB, as a user would, and checks
them against the run summary: DESIGN §6 columns, one row per job, totals equal to the sums.

usage: check_results.py OUT_DIR RUN_ID SUMMARY_JSON EXPECTED_JOBS
"""
import json
import sys

import duckdb
import pyarrow.dataset as ds

REQUIRED = [
    "run_id", "job_id", "status", "model", "provider", "provider_model", "output_text",
    "finish_reason", "input_tokens", "output_tokens", "cost_usd", "baseline_cost_usd",
    "latency_ms", "attempts", "deferred_ms", "route_reason", "error_kind", "error_message",
    "submitted_at", "completed_at", "metadata", "response_json",
]

out, run_id, summary_path, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
summary = json.load(open(summary_path))

# pyarrow, Hive partitioning: the run id comes back as a partition column too.
dataset = ds.dataset(out, format="parquet", partitioning="hive")
table = dataset.to_table(filter=ds.field("run") == run_id)
missing = [c for c in REQUIRED if c not in table.column_names]
assert not missing, f"missing columns: {missing}"
assert table.num_rows == expected, f"pyarrow: {table.num_rows} rows, expected {expected}"
ids = table.column("job_id").to_pylist()
assert len(set(ids)) == len(ids), "a job appears twice"

# DuckDB over the same files.
glob = f"{out}/run={run_id}/*.parquet"
con = duckdb.connect()
n, n_ok, n_failed, cost, baseline, deferrals = con.execute(
    f"""select count(*), count(*) filter (where status = 'succeeded'),
               count(*) filter (where status = 'failed'), sum(cost_usd), sum(baseline_cost_usd),
               sum(deferrals)
        from read_parquet('{glob}', hive_partitioning = true)"""
).fetchone()
assert n == expected, f"duckdb: {n} rows"
assert n_ok == summary["succeeded"], (n_ok, summary["succeeded"])
assert n_failed == summary["failed"], (n_failed, summary["failed"])
assert abs(cost - summary["cost_usd"]) < 1e-9, (cost, summary["cost_usd"])
assert abs(baseline - summary["baseline_cost_usd"]) < 1e-9, (baseline, summary["baseline_cost_usd"])
assert deferrals == summary["deferrals"], (deferrals, summary["deferrals"])
per_provider = dict(con.execute(
    f"""select provider, count(*) from read_parquet('{glob}')
        where status = 'succeeded' group by provider"""
).fetchall())
assert per_provider == {k: v["jobs"] for k, v in summary["providers"].items()}, (per_provider, summary["providers"])
ts = con.execute(f"select typeof(submitted_at) from read_parquet('{glob}') limit 1").fetchone()[0]
assert ts.startswith("TIMESTAMP"), ts
print(f"ok: {n} rows, {n_ok} succeeded, cost {cost:.6f}, baseline {baseline:.6f}")
