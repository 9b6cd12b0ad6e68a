fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mode = std::env::args().nth(2).unwrap();
    let opts = producer::ReadOptions::new(schemas::JobDefaults::new(chrono::Utc::now()));
    let n = if mode == "memory" {
        producer::read_job_file(std::path::Path::new(&path), opts).unwrap().jobs.len()
    } else {
        producer::stream::scan(std::path::Path::new(&path), &path, &opts).unwrap().valid
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    println!("{mode} {n} jobs {hwm}");
}
