//! Processes a test starts: each one killed (and reaped) when the test drops it, pass or fail.

use crate::net::wait_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped, with the log its stderr goes to.
pub struct Proc {
    /// The running process.
    pub child: Child,
    /// What it is, for messages (`sim`, `nats`, a worker's id).
    pub name: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (up to `within`) for the exit status; `None` if it is still running.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Everything logged so far (empty if the log cannot be read).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin sim` (the `offpeak` binary at `bin`) on `scenario` (a TOML file), serving plain
/// HTTP on 127.0.0.1:`port` and logging to `log`; returns once the port is open.
pub fn start_sim(bin: &Path, scenario: &Path, port: u16, log: &Path) -> Proc {
    let child = Command::new(bin)
        .args(["sim", "--scenario"])
        .arg(scenario)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the simulator's log"))
        .spawn()
        .expect("start offpeak sim");
    let sim = Proc {
        child,
        name: "sim".into(),
        log: log.to_path_buf(),
    };
    wait_port(port);
    sim
}

/// Output bytes as text (lossy), for assertion messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
