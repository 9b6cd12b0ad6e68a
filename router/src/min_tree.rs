//! A segment tree with range add and range minimum: the reservation ledger of one pool
//! ([`crate::timeline`]) asks "how much capacity is left by minute i" in O(log n).

/// A segment tree with range add and range minimum.
#[derive(Debug, Clone)]
pub(crate) struct MinTree {
    n: usize,
    min: Vec<f64>,
    add: Vec<f64>,
}

impl MinTree {
    pub(crate) fn new(n: usize, leaf: impl Fn(usize) -> f64) -> MinTree {
        let mut t = MinTree {
            n,
            min: vec![0.0; 4 * n],
            add: vec![0.0; 4 * n],
        };
        t.build(1, 0, n - 1, &leaf);
        t
    }

    fn build(&mut self, node: usize, lo: usize, hi: usize, leaf: &impl Fn(usize) -> f64) {
        if lo == hi {
            self.min[node] = leaf(lo);
            return;
        }
        let mid = (lo + hi) / 2;
        self.build(2 * node, lo, mid, leaf);
        self.build(2 * node + 1, mid + 1, hi, leaf);
        self.min[node] = self.min[2 * node].min(self.min[2 * node + 1]);
    }

    pub(crate) fn add_range(&mut self, l: usize, r: usize, x: f64) {
        self.add_rec(1, 0, self.n - 1, l, r, x);
    }

    fn add_rec(&mut self, node: usize, lo: usize, hi: usize, l: usize, r: usize, x: f64) {
        if r < lo || hi < l {
            return;
        }
        if l <= lo && hi <= r {
            self.min[node] += x;
            self.add[node] += x;
            return;
        }
        let mid = (lo + hi) / 2;
        self.add_rec(2 * node, lo, mid, l, r, x);
        self.add_rec(2 * node + 1, mid + 1, hi, l, r, x);
        self.min[node] = self.min[2 * node].min(self.min[2 * node + 1]) + self.add[node];
    }

    pub(crate) fn min_range(&self, l: usize, r: usize) -> f64 {
        self.min_rec(1, 0, self.n - 1, l, r)
    }

    fn min_rec(&self, node: usize, lo: usize, hi: usize, l: usize, r: usize) -> f64 {
        if r < lo || hi < l {
            return f64::INFINITY;
        }
        if l <= lo && hi <= r {
            return self.min[node];
        }
        let mid = (lo + hi) / 2;
        self.min_rec(2 * node, lo, mid, l, r)
            .min(self.min_rec(2 * node + 1, mid + 1, hi, l, r))
            + self.add[node]
    }

    pub(crate) fn point(&self, i: usize) -> f64 {
        self.min_range(i, i)
    }
}
