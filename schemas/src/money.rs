//! US dollars as a type of their own, never a bare float mixed with token counts.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};

/// An amount in US dollars. f64 is precise enough for costs summed over millions of jobs
/// (relative error ~1e-12) and maps directly to a Parquet DOUBLE column.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usd(pub f64);

impl Usd {
    pub const ZERO: Usd = Usd(0.0);

    /// The price of `tokens` tokens at `per_mtok` dollars per million tokens.
    pub fn for_tokens(tokens: u64, per_mtok: f64) -> Usd {
        Usd(tokens as f64 * per_mtok / 1_000_000.0)
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, o: Usd) -> Usd {
        Usd(self.0 + o.0)
    }
}

impl Sub for Usd {
    type Output = Usd;
    fn sub(self, o: Usd) -> Usd {
        Usd(self.0 - o.0)
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, o: Usd) {
        self.0 += o.0;
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        Usd(iter.map(|u| u.0).sum())
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.abs() < 0.01 && self.0 != 0.0 {
            write!(f, "${:.6}", self.0)
        } else {
            write!(f, "${:.4}", self.0)
        }
    }
}
