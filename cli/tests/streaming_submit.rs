//! `offpeak submit` reads job files in two passes (validate everything, then publish) so its
//! memory does not grow with the file; the contract is unchanged: one invalid line anywhere —
//! the last one included — and nothing is enqueued.

mod support;

use support::*;

fn refuses_a_file_whose_last_line_is_invalid(broker: &str) {
    let fleet = Fleet::start(broker, ONE_FAST_PROVIDER, ONE_PROVIDER_CATALOG);
    let jobs = fleet.path("jobs.jsonl");
    const N: usize = 30_000;
    job_file(&jobs, N + 1, |i| {
        if i == N {
            r#"{"id":"last","model":"no-such-model","prompt":"x"}"#.to_string()
        } else {
            short_job(i)
        }
    });
    let o = fleet.run(&[
        "submit",
        jobs.to_str().unwrap(),
        "--run-id",
        "r1",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(":{}:", N + 1)) && err.contains("model"),
        "{err}"
    );
    assert!(err.contains("nothing was enqueued"), "{err}");
    assert_eq!(fleet.depth(), Some(0), "a job was published");
}

#[test]
fn submit_refuses_a_file_whose_last_line_is_invalid_and_enqueues_nothing_on_nats() {
    refuses_a_file_whose_last_line_is_invalid(&nats_url());
}

#[test]
fn submit_with_a_duplicate_id_far_apart_enqueues_nothing_and_skip_invalid_enqueues_the_rest() {
    let fleet = Fleet::start(&nats_url(), ONE_FAST_PROVIDER, ONE_PROVIDER_CATALOG);
    let jobs = fleet.path("jobs.jsonl");
    const N: usize = 30_000;
    // The last line repeats the id of the second.
    job_file(&jobs, N + 1, |i| short_job(if i == N { 1 } else { i }));
    let o = fleet.run(&[
        "submit",
        jobs.to_str().unwrap(),
        "--run-id",
        "r2",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("duplicate id") && err.contains("first used on line 2"),
        "{err}"
    );
    assert_eq!(fleet.depth(), Some(0));

    let o = fleet.run(&[
        "submit",
        jobs.to_str().unwrap(),
        "--run-id",
        "r2",
        "--quiet",
        "--skip-invalid",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fleet.depth(), Some(N as u64));
}
