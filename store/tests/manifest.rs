//! The run manifest: written atomically under `run=<run_id>/`, read back unchanged.

use chrono::{TimeZone, Utc};
use store::{Manifest, StoreError, MANIFEST_FILE, OFFPEAK_VERSION};

fn manifest(run_id: &str) -> Manifest {
    Manifest {
        run_id: run_id.to_string(),
        job_count: 1200,
        input_file: "jobs.jsonl".to_string(),
        input_sha256: "ab".repeat(32),
        submitted_at: Utc.with_ymd_and_hms(2026, 11, 25, 0, 15, 2).unwrap(),
        catalog: serde_json::json!({"providers": [{"name": "deepseek", "models": [{"model": "deepseek-v3"}]}]}),
        offpeak_version: OFFPEAK_VERSION.to_string(),
        published_at: None,
    }
}

#[test]
fn manifest_written_locally_reads_back_equal_from_the_run_directory() {
    let out = tempfile::tempdir().unwrap();
    let m = manifest("run-20261125-001502");
    let path = m.write_local(out.path()).unwrap();

    assert_eq!(
        path,
        out.path()
            .join("run=run-20261125-001502")
            .join(MANIFEST_FILE)
    );
    assert_eq!(
        Manifest::read_local(out.path(), "run-20261125-001502").unwrap(),
        Some(m)
    );
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[test]
fn rewriting_a_manifest_replaces_it() {
    let out = tempfile::tempdir().unwrap();
    let mut m = manifest("r1");
    m.write_local(out.path()).unwrap();
    m.job_count = 7;
    m.write_local(out.path()).unwrap();
    assert_eq!(
        Manifest::read_local(out.path(), "r1")
            .unwrap()
            .map(|m| m.job_count),
        Some(7)
    );
}

#[test]
fn run_without_manifest_reads_as_none() {
    let out = tempfile::tempdir().unwrap();
    assert_eq!(
        Manifest::read_local(out.path(), "never-submitted").unwrap(),
        None
    );
}

#[test]
fn corrupt_manifest_is_an_error_naming_its_path() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run=r1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(MANIFEST_FILE), b"{\"run_id\":").unwrap();
    let e = Manifest::read_local(out.path(), "r1").unwrap_err();
    assert!(matches!(e, StoreError::Manifest { .. }), "{e:?}");
    assert!(e.to_string().contains("run=r1"), "{e}");
}

#[test]
fn run_id_that_is_not_a_safe_directory_name_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let e = manifest("../escape").write_local(out.path()).unwrap_err();
    assert!(matches!(e, StoreError::InvalidRunId { .. }), "{e:?}");
    assert!(Manifest::read_local(out.path(), "a/b").is_err());
}

#[test]
fn manifest_json_uses_the_documented_field_names() {
    let v: serde_json::Value = serde_json::from_slice(&manifest("r1").to_json()).unwrap();
    for key in [
        "run_id",
        "job_count",
        "input_file",
        "input_sha256",
        "submitted_at",
        "catalog",
        "offpeak_version",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["submitted_at"], "2026-11-25T00:15:02Z");
}
