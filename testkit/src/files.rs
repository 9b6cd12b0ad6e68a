//! Files a test writes: job files, fixtures, and logs that survive a restart.

use std::path::{Path, PathBuf};

/// Writes a JSONL job file at `path` of `n` jobs, line `i` made by `line(i)`.
pub fn job_file(path: &Path, n: usize, line: impl Fn(usize) -> String) {
    let mut s = String::with_capacity(n * 120);
    for i in 0..n {
        s.push_str(&line(i));
        s.push('\n');
    }
    std::fs::write(path, s).expect("write the job file");
}

/// Writes `content` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write a test file");
    path
}

/// `path` opened for appending: a restarted service keeps its earlier lines.
pub fn append_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open a log for appending")
}
