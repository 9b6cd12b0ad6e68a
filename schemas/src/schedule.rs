//! Price schedules (DESIGN §4): when a model's price differs from its list price. A schedule is
//! written on the provider's own clock — an IANA time zone, weekdays, public holidays and the
//! make-up working days that go with them — because that is how providers publish it (DeepSeek
//! doubles its prices in two Beijing-time windows on working days). Dated price changes say from
//! which day a price holds. Everything here is a pure function of the instant it is asked about.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A daily window, on the offer's clock, in which prices are multiplied by `multiplier` (below 1:
/// a discount, above 1: a peak price). `to` before `from` wraps past midnight; the part after
/// midnight belongs to the day the window opened (a Friday-night window runs into Saturday
/// morning even when `days` leaves Saturday out).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceWindow {
    #[serde(deserialize_with = "de_hhmm", serialize_with = "ser_hhmm")]
    pub from: u32,
    #[serde(deserialize_with = "de_hhmm", serialize_with = "ser_hhmm")]
    pub to: u32,
    pub multiplier: f64,
    /// The days on which the window opens; absent: every day.
    #[serde(default, skip_serializing_if = "Days::is_every")]
    pub days: Days,
}

/// The days a [`PriceWindow`] opens on: every day, given weekdays (`["sat", "sun"]`), or
/// `"working"` / `"non-working"` days of the offer's calendar (Monday to Friday, less its
/// `holidays`, plus its make-up `working_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Days {
    #[default]
    Every,
    /// Bit `n` set: open on the weekday `n` days after Monday.
    Weekdays(u8),
    Working,
    NonWorking,
}

/// The working-day calendar of an offer: its clock and the dates that break the weekly rule.
#[derive(Debug, Clone, Copy)]
pub struct Calendar<'a> {
    pub zone: Tz,
    pub holidays: &'a [NaiveDate],
    pub working_days: &'a [NaiveDate],
}

impl Calendar<'_> {
    /// Whether `date` is a working day: a make-up working day, else Monday to Friday and not a
    /// holiday.
    pub fn is_working(&self, date: NaiveDate) -> bool {
        self.working_days.contains(&date)
            || date.weekday().num_days_from_monday() < 5 && !self.holidays.contains(&date)
    }

    /// The date and minute of the day at `t` on this calendar's clock.
    pub fn local(&self, t: DateTime<Utc>) -> (NaiveDate, u32) {
        let l = t.with_timezone(&self.zone);
        (l.date_naive(), l.hour() * 60 + l.minute())
    }

    /// Every instant at which the clock shows `minute` of `date` (two in a repeated hour, none
    /// in a skipped one).
    pub fn instants(&self, date: NaiveDate, minute: u32) -> impl Iterator<Item = DateTime<Utc>> {
        let naive = date.and_hms_opt(minute / 60, minute % 60, 0);
        let mapped = naive.map(|n| self.zone.from_local_datetime(&n));
        let (a, b) = match mapped {
            Some(chrono::LocalResult::Single(a)) => (Some(a), None),
            Some(chrono::LocalResult::Ambiguous(a, b)) => (Some(a), Some(b)),
            _ => (None, None),
        };
        a.into_iter().chain(b).map(|t| t.with_timezone(&Utc))
    }

    /// The instant the clock's offset from UTC changes between `a` and `b`, if it does (found
    /// by bisection to the second; only on the days a zone changes its clocks).
    pub fn offset_change(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let offset = |t: DateTime<Utc>| self.zone.offset_from_utc_datetime(&t.naive_utc()).fix();
        let (mut lo, mut hi) = (a, b);
        if offset(lo) == offset(hi) {
            return None;
        }
        while hi - lo > Duration::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            if offset(mid) == offset(lo) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi)
    }
}

impl Days {
    fn is_every(&self) -> bool {
        *self == Days::Every
    }

    /// Whether a window with these days opens on `date`.
    pub fn holds(&self, date: NaiveDate, cal: &Calendar<'_>) -> bool {
        match self {
            Days::Every => true,
            Days::Weekdays(mask) => mask & (1 << date.weekday().num_days_from_monday()) != 0,
            Days::Working => cal.is_working(date),
            Days::NonWorking => !cal.is_working(date),
        }
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Days, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            One(String),
            List(Vec<String>),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "expected \"working\", \"non-working\" or a list of weekdays such as [\"mon\", \"tue\"], got {s:?}"
            ))
        };
        match Text::deserialize(d)? {
            Text::One(s) => match s.as_str() {
                "working" => Ok(Days::Working),
                "non-working" => Ok(Days::NonWorking),
                "every" => Ok(Days::Every),
                _ => Err(bad(&s)),
            },
            Text::List(days) => {
                let mut mask = 0u8;
                for s in &days {
                    let i = WEEKDAYS
                        .iter()
                        .position(|w| w.eq_ignore_ascii_case(s))
                        .ok_or_else(|| bad(s))?;
                    mask |= 1 << i;
                }
                Ok(Days::Weekdays(mask))
            }
        }
    }
}

impl Serialize for Days {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Days::Every => s.serialize_str("every"),
            Days::Working => s.serialize_str("working"),
            Days::NonWorking => s.serialize_str("non-working"),
            Days::Weekdays(mask) => {
                let names: Vec<&str> = (0..7)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| WEEKDAYS[i])
                    .collect();
                names.serialize(s)
            }
        }
    }
}

/// The weekday `Days` value for these weekdays.
pub fn weekdays(days: &[Weekday]) -> Days {
    Days::Weekdays(
        days.iter()
            .fold(0, |m, d| m | 1 << d.num_days_from_monday()),
    )
}

fn de_hhmm<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    parse_hhmm(&s).ok_or_else(|| serde::de::Error::custom(format!("expected HH:MM, got {s:?}")))
}

fn ser_hhmm<S: Serializer>(m: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{:02}:{:02}", m / 60, m % 60))
}

/// Minutes after midnight of an `HH:MM` string.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl PriceWindow {
    /// A window open every day (the only kind a catalog could write before weekdays).
    pub fn daily(from: u32, to: u32, multiplier: f64) -> PriceWindow {
        PriceWindow {
            from,
            to,
            multiplier,
            days: Days::Every,
        }
    }

    /// Whether minute-of-day `m` falls in the window's hours, whatever the day.
    pub fn contains(&self, m: u32) -> bool {
        if self.from <= self.to {
            m >= self.from && m < self.to
        } else {
            m >= self.from || m < self.to
        }
    }

    /// Whether the window is open at minute `m` of `date` on the calendar's clock.
    pub fn open_at(&self, date: NaiveDate, m: u32, cal: &Calendar<'_>) -> bool {
        if self.from <= self.to || m >= self.from {
            self.contains(m) && self.days.holds(date, cal)
        } else {
            // The tail after midnight of a window that opened the day before.
            m < self.to && date.pred_opt().is_some_and(|d| self.days.holds(d, cal))
        }
    }
}

/// Cache prices in dollars per million tokens, as written in the catalog: each optional, the
/// provider kind's default standing in for one left out (see [`crate::ModelOffer::cache_price_at`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePrices {
    /// A cached input token read back (a cache hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_per_mtok: Option<f64>,
    /// An input token written to a cache kept 5 minutes (Anthropic's default lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_5m_per_mtok: Option<f64>,
    /// An input token written to a cache kept 1 hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_1h_per_mtok: Option<f64>,
}

impl CachePrices {
    /// These prices, each given one replacing the one in `base`.
    pub fn over(self, base: CachePrices) -> CachePrices {
        CachePrices {
            read_per_mtok: self.read_per_mtok.or(base.read_per_mtok),
            write_5m_per_mtok: self.write_5m_per_mtok.or(base.write_5m_per_mtok),
            write_1h_per_mtok: self.write_1h_per_mtok.or(base.write_1h_per_mtok),
        }
    }
}

/// Prices that hold from a date on (from midnight of `effective_from` on the offer's clock):
/// each field given replaces the one in force before; the ones left out carry over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceChange {
    #[serde(deserialize_with = "de_date")]
    pub effective_from: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePrices>,
    /// The windows from that day on (`[]`: none any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<PriceWindow>>,
}

/// An IANA time zone name (`"Asia/Shanghai"`, `"UTC"`), kept as text in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(pub Tz);

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Tz>().map(Zone).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected an IANA time zone such as \"Asia/Shanghai\", got {s:?}: {e}"
            ))
        })
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// A date written as TOML's own date (`2026-10-01`) or as text (`"2026-10-01"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum DateText {
    Toml(toml::value::Datetime),
    Text(String),
}

impl DateText {
    fn date(self) -> Result<NaiveDate, String> {
        match self {
            DateText::Toml(t) => match (t.date, t.time) {
                (Some(d), None) => {
                    NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                        .ok_or_else(|| format!("no such date: {t}"))
                }
                _ => Err(format!("expected a date such as 2026-10-01, got {t}")),
            },
            DateText::Text(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map_err(|e| format!("expected a date such as 2026-10-01, got {s:?}: {e}")),
        }
    }
}

pub(crate) fn de_date<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    DateText::deserialize(d)?
        .date()
        .map_err(serde::de::Error::custom)
}

pub(crate) fn de_dates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NaiveDate>, D::Error> {
    Vec::<DateText>::deserialize(d)?
        .into_iter()
        .map(|t| t.date().map_err(serde::de::Error::custom))
        .collect()
}
