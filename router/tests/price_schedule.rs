//! A week of jobs routed against DeepSeek's peak schedule as the catalog writes it: prices
//! double 09:00–12:00 and 14:00–18:00 Beijing time on working days (DeepSeek V4, PROVIDERS.md).
//! Jobs that can wait go around the peak; a holiday is no working day; jobs that cannot wait
//! see the peak price and go elsewhere.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use router::{CallOutcome, Decision, History, Router, RouterConfig, Ticket};
use schemas::{Catalog, Job, JobDefaults, JobParser};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Wednesday 2026-12-09 is the holiday of this test.
const CATALOG: &str = r#"
[[providers]]
name = "deepseek"
kind = "openai"
base_url = "http://127.0.0.1:1/deepseek/v1"
[[providers.models]]
model = "m"
id = "deepseek-chat"
input_per_mtok = 0.27
output_per_mtok = 1.10
time_zone = "Asia/Shanghai"
holidays = [2026-12-09]
schedule = [
  { from = "09:00", to = "12:00", multiplier = 2.0, days = "working" },
  { from = "14:00", to = "18:00", multiplier = 2.0, days = "working" },
]

# Dearer than DeepSeek's list price, cheaper than its peak price.
[[providers]]
name = "other"
kind = "openai"
base_url = "http://127.0.0.1:1/other/v1"
[[providers.models]]
model = "m"
id = "m"
input_per_mtok = 0.45
output_per_mtok = 1.80
"#;

fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap()
}

fn holiday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 9).unwrap()
}

/// Whether DeepSeek charges its peak price at `t`, worked out by hand: Beijing is UTC+8 all
/// year; Monday to Friday but the holiday; 09:00–12:00 and 14:00–18:00.
fn beijing_peak(t: DateTime<Utc>) -> bool {
    let local = t + Duration::hours(8);
    let working =
        !matches!(local.weekday(), Weekday::Sat | Weekday::Sun) && local.date_naive() != holiday();
    working && matches!(local.hour(), 9..=11 | 14..=17)
}

/// Whether the hours of `t` would be peak on a working day (whatever the day is).
fn peak_hours(t: DateTime<Utc>) -> bool {
    matches!((t + Duration::hours(8)).hour(), 9..=11 | 14..=17)
}

fn job(id: &str, priority: &str, arrival: DateTime<Utc>, deadline: Duration) -> Job {
    let line = format!(
        r#"{{"id":"{id}","model":"m","prompt":"summarise the report","max_tokens":200,"priority":"{priority}","deadline":"{}"}}"#,
        (arrival + deadline).to_rfc3339()
    );
    JobParser::new(JobDefaults::new(arrival), None)
        .parse_line(1, &line)
        .unwrap()
}

/// Where and when each job was served.
struct Served {
    job: Job,
    arrival: DateTime<Utc>,
    at: DateTime<Utc>,
    provider: String,
}

/// Routes `jobs` (with their arrival times) on the production router, re-deciding each
/// deferred job when its deferral ends; every dispatched call answers in a second.
fn route_all(jobs: Vec<(Job, DateTime<Utc>)>) -> Vec<Served> {
    let catalog = Arc::new(Catalog::from_toml("week.toml", CATALOG).unwrap());
    let router = Router::new(catalog, RouterConfig::default(), monday());
    let mut queue: BinaryHeap<Reverse<(DateTime<Utc>, usize)>> = jobs
        .iter()
        .enumerate()
        .map(|(i, (_, at))| Reverse((*at, i)))
        .collect();
    let mut served = Vec::new();
    while let Some(Reverse((now, i))) = queue.pop() {
        let (job, arrival) = &jobs[i];
        let ticket = Ticket {
            job,
            key: &job.id.0,
            history: History {
                waited: now - *arrival,
                ..History::default()
            },
            turn: None,
        };
        match router.decide(&ticket, now) {
            Decision::Dispatch { to, .. } => {
                let provider = to.provider.name.clone();
                let latency = std::time::Duration::from_secs(1);
                router.record(&to.key(), CallOutcome::Answered { latency }, now);
                served.push(Served {
                    job: job.clone(),
                    arrival: *arrival,
                    at: now,
                    provider,
                });
            }
            Decision::Defer { until, .. } => {
                assert!(until > now, "{} deferred to {until} at {now}", job.id.0);
                queue.push(Reverse((until, i)));
            }
            other => panic!("{} at {now}: {other:?}", job.id.0),
        }
    }
    served
}

#[test]
fn a_week_of_deferrable_jobs_goes_around_deepseeks_peak_and_takes_it_on_a_holiday() {
    // A deferrable job every 20 minutes, due within 8 hours (longer than either peak window),
    // Monday to Sunday.
    let jobs: Vec<(Job, DateTime<Utc>)> = (0..7 * 72)
        .map(|k| {
            let at = monday() + Duration::minutes(20 * k);
            (
                job(&format!("d{k}"), "deferrable", at, Duration::hours(8)),
                at,
            )
        })
        .collect();
    let n = jobs.len();
    let served = route_all(jobs);
    assert_eq!(served.len(), n);
    for s in &served {
        assert!(
            s.at < s.job.deadline,
            "{} served late at {}",
            s.job.id.0,
            s.at
        );
        // DeepSeek off-peak is the cheapest price there is; every job can wait for it.
        assert_eq!(s.provider, "deepseek", "{} at {}", s.job.id.0, s.at);
        assert!(
            !beijing_peak(s.at),
            "{} served by DeepSeek at {} inside a peak window",
            s.job.id.0,
            s.at
        );
    }
    // Jobs that arrived during a working day's peak waited for its end.
    let waited = served.iter().filter(|s| beijing_peak(s.arrival)).count();
    assert_eq!(waited, 4 * 21);
    assert!(served
        .iter()
        .filter(|s| beijing_peak(s.arrival))
        .all(|s| s.at > s.arrival));
    // On the holiday, and at the weekend, jobs arriving in the would-be peak hours were served
    // at once, at DeepSeek's list price.
    let free_days: Vec<&Served> = served
        .iter()
        .filter(|s| {
            let day = (s.arrival + Duration::hours(8)).date_naive();
            peak_hours(s.arrival)
                && (day == holiday() || matches!(day.weekday(), Weekday::Sat | Weekday::Sun))
        })
        .collect();
    assert_eq!(free_days.len(), 3 * 21);
    for s in free_days {
        assert_eq!(s.at, s.arrival, "{} waited on a free day", s.job.id.0);
    }
}

#[test]
fn jobs_that_cannot_wait_pay_the_peak_elsewhere_only_on_working_days() {
    // A critical job every 20 minutes over Tuesday to Thursday (Wednesday the holiday).
    let tuesday = monday() + Duration::days(1);
    let jobs: Vec<(Job, DateTime<Utc>)> = (0..3 * 72)
        .map(|k| {
            let at = tuesday + Duration::minutes(20 * k) + Duration::seconds(30);
            (
                job(&format!("c{k}"), "critical", at, Duration::minutes(10)),
                at,
            )
        })
        .collect();
    for s in route_all(jobs) {
        assert_eq!(s.at, s.arrival, "{}", s.job.id.0);
        let expected = if beijing_peak(s.at) {
            "other"
        } else {
            "deepseek"
        };
        assert_eq!(s.provider, expected, "{} at {}", s.job.id.0, s.at);
    }
}
