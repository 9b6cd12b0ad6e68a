//! Price schedules as a catalog writes them: weekdays, a time zone, holidays, make-up working
//! days, dated changes and cache prices, parsed from TOML and evaluated at instants.

use super::*;
use chrono::TimeZone;

/// DeepSeek's V4 peak as the example catalog writes it: double 09:00–12:00 and 14:00–18:00
/// Beijing time on working days, New Year's Day 2027 a holiday.
const PEAK: &str = r#"
[[providers]]
name = "deepseek"
kind = "openai"
base_url = "http://x"
[[providers.models]]
model = "m"
id = "m"
input_per_mtok = 1.0
output_per_mtok = 2.0
cache = { read_per_mtok = 0.1 }
time_zone = "Asia/Shanghai"
holidays = [2027-01-01, "2026-12-07"]
working_days = [2026-12-12]
schedule = [
  { from = "09:00", to = "12:00", multiplier = 2.0, days = "working" },
  { from = "14:00", to = "18:00", multiplier = 2.0, days = "working" },
]
"#;

fn model(text: &str) -> ModelOffer {
    Catalog::from_toml("c.toml", text).unwrap().providers[0].models[0].clone()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

#[test]
fn peak_windows_double_prices_in_beijing_working_hours_only() {
    let o = model(PEAK);
    // Thursday 2026-12-03: 09:30 Beijing is 01:30 UTC.
    assert_eq!(o.price_at(utc(2026, 12, 3, 1, 30)).input_per_mtok, 2.0);
    assert_eq!(o.price_at(utc(2026, 12, 3, 0, 59)).input_per_mtok, 1.0);
    // 12:00–14:00 Beijing (04:00–06:00 UTC) is off-peak; 14:00–18:00 (06:00–10:00 UTC) is not.
    assert_eq!(o.price_at(utc(2026, 12, 3, 4, 30)).output_per_mtok, 2.0);
    assert_eq!(o.price_at(utc(2026, 12, 3, 6, 0)).output_per_mtok, 4.0);
    assert_eq!(o.price_at(utc(2026, 12, 3, 9, 59)).output_per_mtok, 4.0);
    assert_eq!(o.price_at(utc(2026, 12, 3, 10, 0)).output_per_mtok, 2.0);
    // Sunday 2026-12-06 is no working day.
    assert_eq!(o.multiplier_at(utc(2026, 12, 6, 2, 0)), 1.0);
}

#[test]
fn holidays_shut_working_day_windows_and_make_up_days_open_them() {
    let o = model(PEAK);
    // Friday 2027-01-01 (TOML date) and Monday 2026-12-07 (quoted date) are holidays.
    assert_eq!(o.multiplier_at(utc(2027, 1, 1, 2, 0)), 1.0);
    assert_eq!(o.multiplier_at(utc(2026, 12, 7, 2, 0)), 1.0);
    assert_eq!(o.multiplier_at(utc(2026, 12, 8, 2, 0)), 2.0);
    // Saturday 2026-12-12 is worked.
    assert_eq!(o.multiplier_at(utc(2026, 12, 12, 2, 0)), 2.0);
    assert_eq!(o.multiplier_at(utc(2026, 12, 13, 2, 0)), 1.0);
}

#[test]
fn next_price_change_crosses_a_weekend_and_a_holiday() {
    let o = model(PEAK);
    // Inside Thursday's first window: it ends at 12:00 Beijing.
    assert_eq!(
        o.next_price_change(utc(2026, 12, 3, 2, 0)),
        Some(utc(2026, 12, 3, 4, 0))
    );
    // Friday 18:00 Beijing: next is Tuesday 09:00 (Monday 2026-12-07 is a holiday).
    assert_eq!(
        o.next_price_change(utc(2026, 12, 4, 10, 0)),
        Some(utc(2026, 12, 8, 1, 0))
    );
    // Thursday evening before New Year's Day (a Friday holiday): Monday 2027-01-04 09:00.
    assert_eq!(
        o.next_price_change(utc(2026, 12, 31, 10, 30)),
        Some(utc(2027, 1, 4, 1, 0))
    );
    // The make-up Saturday 2026-12-12 opens at 09:00 Beijing on Saturday.
    assert_eq!(
        o.next_price_change(utc(2026, 12, 11, 12, 0)),
        Some(utc(2026, 12, 12, 1, 0))
    );
}

/// The first minute after `t` at which the price differs, by looking at every minute.
fn brute_next_change(o: &ModelOffer, t: DateTime<Utc>, days: i64) -> Option<DateTime<Utc>> {
    let key = |t| (o.price_at(t), o.cache_price_at(ProviderKind::Openai, t));
    let now = key(t);
    let start = t.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    (1..days * 1440)
        .map(|m| start + Duration::minutes(m))
        .filter(|u| *u > t)
        .find(|u| key(*u) != now)
}

#[test]
fn next_price_change_agrees_with_a_minute_by_minute_scan() {
    let mut zoned = model(PEAK);
    zoned.changes.push(PriceChange {
        effective_from: NaiveDate::from_ymd_opt(2026, 12, 16).unwrap(),
        input_per_mtok: Some(3.0),
        output_per_mtok: None,
        cache: None,
        schedule: Some(vec![PriceWindow {
            from: 22 * 60,
            to: 2 * 60,
            multiplier: 0.5,
            days: crate::schedule::weekdays(&[chrono::Weekday::Fri]),
        }]),
    });
    let mut t = utc(2026, 12, 1, 0, 7);
    while t < utc(2026, 12, 24, 0, 0) {
        assert_eq!(
            zoned.next_price_change(t),
            brute_next_change(&zoned, t, 12),
            "from {t}"
        );
        t += Duration::minutes(97);
    }
}

#[test]
fn a_wrapping_window_belongs_to_the_day_it_opens() {
    let mut o = offer_from(
        "schedule = [{ from = '22:00', to = '02:00', multiplier = 0.5, days = ['fri'] }]",
    );
    assert_eq!(o.multiplier_at(utc(2026, 12, 4, 23, 0)), 0.5); // Friday night
    assert_eq!(o.multiplier_at(utc(2026, 12, 5, 1, 0)), 0.5); // its Saturday-morning tail
    assert_eq!(o.multiplier_at(utc(2026, 12, 5, 23, 0)), 1.0); // Saturday night
    assert_eq!(o.multiplier_at(utc(2026, 12, 4, 1, 0)), 1.0); // Thursday's tail: shut
    o.schedule[0].days = Days::Every;
    assert_eq!(o.multiplier_at(utc(2026, 12, 4, 1, 0)), 0.5);
}

fn offer_from(fields: &str) -> ModelOffer {
    model(&format!(
        "[[providers]]\nname='p'\nkind='openai'\nbase_url='http://x'\n[[providers.models]]\nmodel='m'\nid='m'\ninput_per_mtok=1\noutput_per_mtok=2\n{fields}\n"
    ))
}

#[test]
fn a_dated_change_takes_over_at_midnight_on_the_offers_clock() {
    let fields = "time_zone = 'Asia/Shanghai'\nschedule = [{ from = '00:30', to = '08:30', multiplier = 0.5 }]\n[[providers.models.changes]]\neffective_from = 2026-07-15\ninput_per_mtok = 3.0\nschedule = []";
    let o = offer_from(fields);
    // 2026-07-14 20:00 UTC is 04:00 on the 15th in Beijing: the change holds, no window.
    assert_eq!(o.price_at(utc(2026, 7, 14, 20, 0)).input_per_mtok, 3.0);
    // A day earlier the old price and its window held.
    assert_eq!(o.price_at(utc(2026, 7, 13, 20, 0)).input_per_mtok, 0.5);
    assert_eq!(o.price_at(utc(2026, 7, 13, 20, 0)).output_per_mtok, 1.0);
    // The output price carries over.
    assert_eq!(o.price_at(utc(2026, 7, 20, 20, 0)).output_per_mtok, 2.0);
    // At 20:00 Beijing the day before, the next change is the new price at Beijing's midnight
    // (16:00 UTC), before the old window would have opened at 00:30.
    assert_eq!(
        o.next_price_change(utc(2026, 7, 14, 12, 0)),
        Some(utc(2026, 7, 14, 16, 0))
    );
    // After the last change nothing moves any more.
    assert_eq!(o.next_price_change(utc(2026, 8, 1, 0, 0)), None);
}

#[test]
fn a_window_follows_its_zones_daylight_saving_time() {
    let o = offer_from("time_zone = 'Europe/Berlin'\nschedule = [{ from = '09:00', to = '17:00', multiplier = 1.5 }]");
    // 09:30 in Berlin: 08:30 UTC in winter, 07:30 UTC in summer.
    assert_eq!(o.multiplier_at(utc(2027, 1, 11, 8, 30)), 1.5);
    assert_eq!(o.multiplier_at(utc(2027, 7, 12, 7, 30)), 1.5);
    assert_eq!(o.multiplier_at(utc(2027, 7, 12, 15, 30)), 1.0);
    // The clocks go forward on 2027-03-28 at 01:00 UTC; the window opens at 07:00 UTC then.
    assert_eq!(
        o.next_price_change(utc(2027, 3, 28, 0, 0)),
        Some(utc(2027, 3, 28, 7, 0))
    );
    // The capacity plan splits its pools at both UTC hours the opening can fall on.
    let edges = o.utc_price_edges(utc(2027, 1, 1, 0, 0));
    for m in [7 * 60, 8 * 60, 15 * 60, 16 * 60] {
        assert!(edges.contains(&m), "{edges:?}");
    }
}

#[test]
fn cache_prices_default_by_provider_kind_and_follow_the_schedule() {
    let o = model(PEAK);
    let peak = utc(2026, 12, 3, 1, 30);
    let off = utc(2026, 12, 3, 4, 30);
    // Written read price, doubled at peak; writes default to the input price (OpenAI kind).
    let c = o.cache_price_at(ProviderKind::Openai, off);
    assert_eq!((c.read_per_mtok, c.write_5m_per_mtok), (0.1, 1.0));
    let c = o.cache_price_at(ProviderKind::Openai, peak);
    assert_eq!((c.read_per_mtok, c.write_1h_per_mtok), (0.2, 2.0));
    // Anthropic's published multiples of the input price when the catalog gives none.
    let mut a = ModelOffer {
        input_per_mtok: Some(3.0),
        output_per_mtok: Some(15.0),
        ..ModelOffer::default()
    };
    let c = a.cache_price_at(ProviderKind::Anthropic, off);
    assert!((c.read_per_mtok - 0.3).abs() < 1e-12, "{c:?}");
    assert_eq!((c.write_5m_per_mtok, c.write_1h_per_mtok), (3.75, 6.0));
    // The batch discount applies to cached tokens too; no batch route, no price.
    assert_eq!(
        a.route_cache_price_at(ProviderKind::Anthropic, Route::Batch, off),
        None
    );
    a.batch = Some(BatchOffer {
        discount: 0.5,
        window: std::time::Duration::from_secs(86400),
        turnaround: None,
        max_requests: None,
        max_bytes: None,
        results_kept: None,
    });
    let c = a
        .route_cache_price_at(ProviderKind::Anthropic, Route::Batch, off)
        .unwrap();
    assert_eq!(c.write_1h_per_mtok, 3.0);
}

#[test]
fn catalog_refuses_unknown_days_zones_unordered_changes_and_bad_cache_prices() {
    for (fields, says) in [
        (
            "schedule = [{ from = '01:00', to = '02:00', multiplier = 2, days = ['mon', 'funday'] }]",
            "funday",
        ),
        ("time_zone = 'Mars/Olympus'", "Mars/Olympus"),
        ("holidays = ['2026-02-30']", "2026-02-30"),
        ("cache = { read_per_mtok = -1 }", "cache.read_per_mtok"),
        (
            "[[providers.models.changes]]\neffective_from = 2027-01-01\n[[providers.models.changes]]\neffective_from = 2026-01-01",
            "changes[1].effective_from",
        ),
        (
            "[[providers.models.changes]]\neffective_from = 2027-01-01\nschedule = [{ from = '01:00', to = '02:00', multiplier = 0 }]",
            "changes[0].schedule[0].multiplier",
        ),
    ] {
        let text = format!(
            "[[providers]]\nname='p'\nkind='openai'\nbase_url='http://x'\n[[providers.models]]\nmodel='m'\nid='m'\ninput_per_mtok=1\noutput_per_mtok=1\n{fields}\n"
        );
        let e = Catalog::from_toml("c.toml", &text).unwrap_err().to_string();
        assert!(e.contains(says), "{fields}: {e}");
    }
}

#[test]
fn a_scheduled_catalog_survives_a_toml_round_trip() {
    let cat = Catalog::from_toml("c.toml", PEAK).unwrap();
    let text = toml::to_string(&cat).unwrap();
    let back = Catalog::from_toml("back.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let (a, b) = (&cat.providers[0].models[0], &back.providers[0].models[0]);
    let mut t = utc(2026, 12, 1, 0, 0);
    while t < utc(2027, 1, 8, 0, 0) {
        assert_eq!(a.price_at(t), b.price_at(t), "{t}");
        t += Duration::minutes(30);
    }
    assert_eq!(a.holidays, b.holidays);
}

#[test]
fn the_example_catalogs_double_deepseek_in_beijing_peak_hours_on_working_days() {
    for (file, text) in [
        (
            "examples/catalog.toml",
            include_str!("../../../examples/catalog.toml"),
        ),
        (
            "deploy/compose-catalog.toml",
            include_str!("../../../deploy/compose-catalog.toml"),
        ),
    ] {
        let cat = Catalog::from_toml(file, text).unwrap();
        let ds = &cat.provider("deepseek").unwrap().models[0];
        let list = ds.list_price_at(utc(2026, 12, 3, 0, 0));
        // Thursday 2026-12-03, 02:00 and 07:00 UTC: peak; 05:00 and 16:30 UTC: list price.
        for (h, m, k) in [(2, 0, 2.0), (7, 0, 2.0), (5, 0, 1.0), (16, 30, 1.0)] {
            let p = ds.price_at(utc(2026, 12, 3, h, m));
            assert_eq!(p.input_per_mtok, k * list.input_per_mtok, "{file} {h}:{m}");
        }
        // Saturday, and New Year's Day 2027 (a Friday), are not working days.
        assert_eq!(ds.multiplier_at(utc(2026, 12, 5, 2, 0)), 1.0, "{file}");
        assert_eq!(ds.multiplier_at(utc(2027, 1, 1, 2, 0)), 1.0, "{file}");
        let cached = ds.cache_price_at(ProviderKind::Openai, utc(2026, 12, 3, 5, 0));
        assert!(cached.read_per_mtok < list.input_per_mtok, "{file}");
    }
}
