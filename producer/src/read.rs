//! Reading a job file into a [`ValidationReport`]: every line (JSONL) or row (Parquet) is parsed
//! and validated by [`schemas::JobParser`], so both formats give the same errors, and the whole
//! file is checked before anything is published (DESIGN §2).

use crate::parquet_rows;
use crate::report::{RejectedLine, ValidationReport};
use crate::ProducerError;
use schemas::{Job, JobDefaults, JobError, JobParser};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// How to read and validate a job file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Deadline, priority and submission time for jobs that do not set them.
    pub defaults: JobDefaults,
    /// The catalog's canonical model names; a job naming another model is rejected. `None`
    /// accepts any model name.
    pub known_models: Option<HashSet<String>>,
    /// Refuse the file (with [`ProducerError::TooManyJobs`]) once it holds more valid jobs than
    /// this; `None` means no limit.
    pub max_jobs: Option<usize>,
    /// Reject a job whose `messages`, as JSON, are bigger than this many bytes (field
    /// `messages`, naming the size and the limit); `None` means no limit. Workers refuse such
    /// jobs anyway (`worker.max_prompt_bytes`); checking here fails them before they are sent.
    pub max_prompt_bytes: Option<usize>,
}

impl ReadOptions {
    /// Options with the given defaults, any model accepted and no job limit.
    pub fn new(defaults: JobDefaults) -> Self {
        ReadOptions {
            defaults,
            known_models: None,
            max_jobs: None,
            max_prompt_bytes: None,
        }
    }
}

/// The layout of a job file, which decides how errors are located (`file:line` or `row N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON object per line, native or OpenAI Batch (detected per line).
    Jsonl,
    /// One job per row.
    Parquet,
}

const PARQUET_MAGIC: &[u8; 4] = b"PAR1";
const UTF8_BOM: &str = "\u{feff}";

/// Reads and validates the whole job file at `path`.
///
/// The file is Parquet when its extension is `.parquet` or it starts with the `PAR1` magic, and
/// JSONL otherwise. Every line or row is validated; valid jobs land in
/// [`ValidationReport::jobs`] in file order and each invalid one in [`ValidationReport::errors`]
/// with its 1-based line or row number, the field at fault and the original text. Blank JSONL
/// lines are skipped (but counted for line numbers).
///
/// Errors: the file cannot be opened or read ([`ProducerError::Io`], [`ProducerError::ReadAt`]
/// with the line), the Parquet file is unreadable ([`ProducerError::Parquet`]), or it holds more
/// than [`ReadOptions::max_jobs`] valid jobs ([`ProducerError::TooManyJobs`]; reading stops there).
/// This is blocking I/O.
pub fn read_job_file(path: &Path, opts: ReadOptions) -> Result<ValidationReport, ProducerError> {
    read_job_file_named(path, &path.display().to_string(), opts)
}

/// Like [`read_job_file`], but the report and every error name the file `name` (the location
/// the user gave, such as `s3://bucket/jobs.jsonl`) instead of `path`, the local copy actually
/// read. A `.parquet` extension on either means Parquet.
pub fn read_job_file_named(
    path: &Path,
    name: &str,
    opts: ReadOptions,
) -> Result<ValidationReport, ProducerError> {
    let name = Path::new(name);
    let format = detect_format(path, name)?;
    let max_prompt = opts.max_prompt_bytes;
    let mut collector = Collector::new(name, format, opts);
    visit_rows(path, name, format, &mut |line, mut raw| {
        let parsed = raw.parse(&mut collector.parser, line, max_prompt);
        collector.record(parsed, &raw.text)?;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(collector.report)
}

/// One line (JSONL) or row (Parquet) of a job file, before validation.
pub(crate) struct RawRow<'a> {
    /// The line's text, or the row as JSON text: what a rejects file keeps.
    pub(crate) text: Cow<'a, str>,
    /// The row already turned into JSON (Parquet), or why it could not be (a row that does not
    /// convert, a JSONL line that is not UTF-8); `None` for a JSONL line, parsed from `text`.
    pub(crate) value: Option<Result<Value, JobError>>,
}

impl RawRow<'_> {
    /// Validates the row into a job (once: the value is taken), refusing a prompt over
    /// `max_prompt_bytes`.
    pub(crate) fn parse(
        &mut self,
        parser: &mut JobParser,
        line: usize,
        max_prompt_bytes: Option<usize>,
    ) -> Result<Job, JobError> {
        let job = match self.value.take() {
            None => parser.parse_line(line, &self.text),
            Some(value) => value.and_then(|v| parser.parse_value(line, v)),
        }?;
        if let Some(limit) = max_prompt_bytes {
            let size = schemas::json_size(&job.messages);
            if size > limit {
                return Err(JobError {
                    line,
                    field: "messages".into(),
                    reason: format!(
                        "prompt is {size} bytes, over the limit of {limit} bytes (worker.max_prompt_bytes)"
                    ),
                });
            }
        }
        Ok(job)
    }
}

/// What a row visitor is told: the 1-based line or row number and the row. It returns
/// `Break` to stop reading early.
pub(crate) type Visitor<'v> =
    dyn FnMut(usize, RawRow<'_>) -> Result<ControlFlow<()>, ProducerError> + 'v;

/// Calls `visit` on every non-blank line or row of the file at `path`, in order, holding one
/// line (or one Parquet batch) in memory at a time. `name` is the file as errors name it.
pub(crate) fn visit_rows(
    path: &Path,
    name: &Path,
    format: InputFormat,
    visit: &mut Visitor<'_>,
) -> Result<(), ProducerError> {
    match format {
        InputFormat::Jsonl => visit_jsonl(path, name, visit),
        InputFormat::Parquet => parquet_rows::visit_parquet(path, name, visit),
    }
}

pub(crate) fn detect_format(path: &Path, name: &Path) -> Result<InputFormat, ProducerError> {
    let is_parquet = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    };
    if is_parquet(path) || is_parquet(name) {
        return Ok(InputFormat::Parquet);
    }
    let mut head = Vec::with_capacity(PARQUET_MAGIC.len());
    File::open(path)
        .and_then(|f| f.take(PARQUET_MAGIC.len() as u64).read_to_end(&mut head))
        .map_err(|e| ProducerError::io(name, e))?;
    Ok(if head == PARQUET_MAGIC {
        InputFormat::Parquet
    } else {
        InputFormat::Jsonl
    })
}

fn visit_jsonl(path: &Path, name: &Path, visit: &mut Visitor<'_>) -> Result<(), ProducerError> {
    let file = File::open(path).map_err(|e| ProducerError::io(name, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| ProducerError::ReadAt {
                file: name.to_path_buf(),
                line: line + 1,
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let raw = match std::str::from_utf8(&buf) {
            Ok(text) => {
                let text = if line == 1 {
                    text.trim_start_matches(UTF8_BOM)
                } else {
                    text
                };
                if text.trim().is_empty() {
                    continue;
                }
                RawRow {
                    text: Cow::Borrowed(text),
                    value: None,
                }
            }
            Err(e) => RawRow {
                text: Cow::Owned(String::from_utf8_lossy(&buf).into_owned()),
                value: Some(Err(JobError {
                    line,
                    field: "-".into(),
                    reason: format!(
                        "not valid UTF-8 (at byte {} of the line)",
                        e.valid_up_to() + 1
                    ),
                })),
            },
        };
        if visit(line, raw)?.is_break() {
            return Ok(());
        }
    }
}

/// Accumulates the outcome of each line or row into the report and enforces `max_jobs`.
struct Collector {
    parser: JobParser,
    report: ValidationReport,
    /// The file as errors name it.
    path: PathBuf,
    max_jobs: Option<usize>,
}

impl Collector {
    /// `path` is the file as errors and the report name it.
    fn new(path: &Path, format: InputFormat, opts: ReadOptions) -> Self {
        Collector {
            parser: JobParser::new(opts.defaults, opts.known_models),
            report: ValidationReport {
                file: path.display().to_string(),
                format,
                jobs: Vec::new(),
                errors: Vec::new(),
                lines: 0,
            },
            path: path.to_path_buf(),
            max_jobs: opts.max_jobs,
        }
    }

    fn record(&mut self, parsed: Result<Job, JobError>, raw: &str) -> Result<(), ProducerError> {
        self.report.lines += 1;
        match parsed {
            Ok(job) => {
                if let Some(limit) = self.max_jobs {
                    if self.report.jobs.len() >= limit {
                        return Err(ProducerError::TooManyJobs {
                            file: self.path.clone(),
                            limit,
                        });
                    }
                }
                self.report.jobs.push(job);
            }
            Err(error) => self.report.errors.push(RejectedLine {
                error,
                raw: raw.to_string(),
            }),
        }
        Ok(())
    }
}
