"""The headline figures of an offpeak run computed by DuckDB straight from its Parquet files
(de-duplicated by job_id as offpeak does: a succeeded row over a failed one), printed as JSON,
for comparison with `offpeak report` and `offpeak status`.

usage: report_figures.py OUT_DIR RUN_ID
"""
import json
import sys

import duckdb

out, run_id = sys.argv[1], sys.argv[2]
glob = f"{out}/run={run_id}/[!_]*.parquet"
con = duckdb.connect()
succeeded, failed, cost, baseline, late, deferrals = con.execute(
    f"""with rows as (select * from read_parquet('{glob}')),
            d as (select * from rows
                  qualify row_number() over (partition by job_id
                                             order by (status = 'succeeded') desc) = 1)
        select count(*) filter (where status = 'succeeded'),
               count(*) filter (where status = 'failed'),
               sum(cost_usd), sum(baseline_cost_usd),
               count(*) filter (where completed_at > deadline),
               sum(deferrals)
        from d"""
).fetchone()
print(json.dumps({
    "succeeded": succeeded,
    "failed": failed,
    "cost_usd": cost,
    "baseline_cost_usd": baseline,
    "deadline_misses": late,
    "deferrals": int(deferrals),
}))
