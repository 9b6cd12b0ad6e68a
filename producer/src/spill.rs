//! A multiset of 64-bit values (pass 1's id hashes) in bounded memory: up to `cap` of them in
//! memory, each full batch then sorted and written to an anonymous temporary file (a run), and
//! every value read back in ascending order by merging the runs. Memory stays at `cap` values
//! plus one read buffer per run whatever the file's size; runs are merged into one whenever
//! there are [`FAN_IN`] of them, which bounds the open files too.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// Values kept in memory before a run goes to disk (512 KiB; a 1M-job file makes 16 runs).
pub(crate) const IN_MEMORY: usize = 1 << 16;

/// Runs on disk at most; the next spill first merges them into one.
const FAN_IN: usize = 64;

/// The values pushed so far, in memory and in sorted runs on disk.
pub(crate) struct SortedSpill {
    cap: usize,
    mem: Vec<u64>,
    runs: Vec<File>,
    len: usize,
}

impl SortedSpill {
    /// An empty set keeping at most `cap` values in memory.
    pub(crate) fn new(cap: usize) -> Self {
        SortedSpill {
            cap: cap.max(1),
            mem: Vec::new(),
            runs: Vec::new(),
            len: 0,
        }
    }

    /// Values pushed, duplicates included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, value: u64) -> io::Result<()> {
        self.mem.push(value);
        self.len += 1;
        if self.mem.len() >= self.cap {
            if self.runs.len() >= FAN_IN {
                let runs = std::mem::take(&mut self.runs);
                let merged = write_run(|w| merge(&runs, &[], w))?;
                self.runs.push(merged);
            }
            self.mem.sort_unstable();
            let mem = std::mem::take(&mut self.mem);
            let run = write_run(|w| mem.iter().try_for_each(|v| w(*v)))?;
            self.runs.push(run);
        }
        Ok(())
    }

    /// Calls `f` with every value in ascending order, duplicates included.
    pub(crate) fn for_each_sorted(&mut self, mut f: impl FnMut(u64)) -> io::Result<()> {
        self.mem.sort_unstable();
        merge(&self.runs, &self.mem, |v| {
            f(v);
            Ok(())
        })
    }

    /// Distinct values pushed.
    pub(crate) fn distinct(&mut self) -> io::Result<usize> {
        let (mut n, mut last) = (0, None);
        self.for_each_sorted(|v| {
            if last != Some(v) {
                n += 1;
                last = Some(v);
            }
        })?;
        Ok(n)
    }
}

/// A new run on disk holding what `fill` writes (in order), rewound for reading.
fn write_run(
    fill: impl FnOnce(&mut dyn FnMut(u64) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<File> {
    let mut out = BufWriter::new(tempfile::tempfile()?);
    fill(&mut |v| out.write_all(&v.to_le_bytes()))?;
    let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Merges the sorted runs and the sorted `mem` into `f`, in ascending order.
fn merge(runs: &[File], mem: &[u64], mut f: impl FnMut(u64) -> io::Result<()>) -> io::Result<()> {
    let mut readers = runs
        .iter()
        .map(|file| {
            // The clone shares the file's offset: rewind before reading from the start.
            let mut file = file.try_clone()?;
            file.seek(SeekFrom::Start(0))?;
            Ok(BufReader::new(file))
        })
        .collect::<io::Result<Vec<_>>>()?;
    // (next value, source): sources 0.. are the runs, `runs.len()` is `mem`.
    let mut heap = BinaryHeap::with_capacity(readers.len() + 1);
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(v) = next(r)? {
            heap.push(Reverse((v, i)));
        }
    }
    let mut at = 0;
    if let Some(v) = mem.first() {
        heap.push(Reverse((*v, readers.len())));
        at = 1;
    }
    while let Some(Reverse((v, i))) = heap.pop() {
        f(v)?;
        let following = if i == readers.len() {
            let v = mem.get(at).copied();
            at += 1;
            v
        } else {
            next(&mut readers[i])?
        };
        if let Some(v) = following {
            heap.push(Reverse((v, i)));
        }
    }
    Ok(())
}

fn next(r: &mut impl Read) -> io::Result<Option<u64>> {
    let mut b = [0u8; 8];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(Some(u64::from_le_bytes(b))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream with repeats: 20,000 values from a range of 15,000.
    fn values() -> Vec<u64> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % 15_000
            })
            .collect()
    }

    #[test]
    fn spilled_runs_read_back_in_order_with_every_duplicate() {
        let values = values();
        let mut expected = values.clone();
        expected.sort_unstable();
        // 100 a run: 200 runs, so the fan-in merge runs three times.
        for cap in [100, 7_000, 1 << 20] {
            let mut spill = SortedSpill::new(cap);
            for v in &values {
                spill.push(*v).unwrap();
            }
            assert_eq!(spill.len(), values.len());
            assert!(spill.runs.len() <= FAN_IN, "{} runs", spill.runs.len());
            assert!(spill.mem.len() < cap);
            let mut got = Vec::new();
            spill.for_each_sorted(|v| got.push(v)).unwrap();
            assert_eq!(got, expected, "cap {cap}");
            // Reading again gives the same (runs are rewound), as does the distinct count.
            let mut distinct = expected.clone();
            distinct.dedup();
            assert_eq!(spill.distinct().unwrap(), distinct.len(), "cap {cap}");
        }
    }
}
