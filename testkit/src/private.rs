//! Brokers of a test's own — a `nats-server -js` or a RabbitMQ node on free ports with their own
//! data directories — for tests that kill, restart or reconfigure the broker (TLS), which the
//! shared services of `deploy/local/` must never be.

use crate::files::append_log;
use crate::net::{free_port, wait_port};
use crate::process::Proc;
use crate::unique;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server -js` of the test's own, on a free port with its own store directory.
pub struct PrivateNats {
    /// The client port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    /// The server's certificate and key, for a server that requires TLS.
    tls: Option<(PathBuf, PathBuf)>,
    proc: Option<Proc>,
}

impl PrivateNats {
    /// Starts a plain server storing under `dir`; returns once it listens.
    pub fn start(dir: &Path) -> PrivateNats {
        PrivateNats::start_with(dir, None)
    }

    /// A server that requires TLS, with `cert` and `key` (PEM).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> PrivateNats {
        PrivateNats::start_with(dir, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(dir: &Path, tls: Option<(PathBuf, PathBuf)>) -> PrivateNats {
        let mut n = PrivateNats {
            port: free_port(),
            dir: dir.to_path_buf(),
            tls,
            proc: None,
        };
        n.up();
        n
    }

    /// The URL clients connect to (`tls://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and store; returns once it listens.
    pub fn up(&mut self) {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let log = self.dir.join("nats.log");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.dir.join("store"));
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--tls")
                .arg("--tlscert")
                .arg(cert)
                .arg("--tlskey")
                .arg(key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(append_log(&log))
            .spawn()
            .expect("start nats-server (deploy/local/services.sh installs it)");
        self.proc = Some(Proc {
            child,
            name: "nats".into(),
            log,
        });
        wait_port(self.port);
    }

    /// SIGKILL: no goodbye to the clients.
    pub fn kill(&mut self) {
        self.proc = None;
    }
}

/// The server side of an AMQPS listener: PEM files (the CA, the server's certificate and key).
pub struct TlsFiles<'a> {
    /// The CA that signed `cert`.
    pub ca: &'a Path,
    /// The server's certificate.
    pub cert: &'a Path,
    /// The server's private key.
    pub key: &'a Path,
}

/// A RabbitMQ node of the test's own (its own node name, ports and data directory), started
/// from the machine's installation; SIGKILLed as a whole process group.
pub struct PrivateRabbit {
    /// The AMQP port on 127.0.0.1.
    pub port: u16,
    /// The AMQPS listener's port, when the node has one.
    pub tls_port: Option<u16>,
    dir: PathBuf,
    node: String,
    proc: Option<Proc>,
}

impl PrivateRabbit {
    /// Starts a node keeping its data under `dir`; returns once it listens.
    pub fn start(dir: &Path) -> PrivateRabbit {
        PrivateRabbit::start_with(dir, None)
    }

    /// A node that also listens for AMQPS on loopback with `tls`'s certificate (clients are
    /// not asked for certificates of their own).
    pub fn start_tls(dir: &Path, tls: TlsFiles) -> PrivateRabbit {
        PrivateRabbit::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<TlsFiles>) -> PrivateRabbit {
        let port = free_port();
        let mut conf = format!("listeners.tcp.local = 127.0.0.1:{port}\n");
        let tls_port = tls.map(|t| {
            let tls_port = free_port();
            conf.push_str(&format!(
                "listeners.ssl.local = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                t.ca.display(),
                t.cert.display(),
                t.key.display()
            ));
            tls_port
        });
        std::fs::write(dir.join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        let mut r = PrivateRabbit {
            port,
            tls_port,
            dir: dir.to_path_buf(),
            node: format!("{}@localhost", unique("offpeak-rabbit")),
            proc: None,
        };
        r.up();
        r
    }

    /// The plain AMQP URL (as `guest`).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQPS URL, by host name (the server's certificate names `localhost`; `guest` may
    /// log in only from loopback).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a node started with start_tls");
        format!("amqps://guest:guest@localhost:{port}/%2f")
    }

    /// (Re)starts the node on the same ports and data; returns once every listener is open.
    pub fn up(&mut self) {
        use std::os::unix::process::CommandExt;
        let d = |n: &str| self.dir.join(n);
        let log = d("rabbit.log");
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("HOME", &self.dir)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(append_log(&log))
            .spawn()
            .expect("start rabbitmq-server (deploy/local/services.sh installs it)");
        self.proc = Some(Proc {
            child,
            name: "rabbitmq".into(),
            log,
        });
        let start = Instant::now();
        for port in std::iter::once(self.port).chain(self.tls_port) {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "rabbitmq never opened port {port}; see {}",
                    d("log").display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// SIGKILL to the whole node (the start script and the Erlang VM).
    pub fn kill(&mut self) {
        if let Some(p) = &self.proc {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", p.pid())])
                .status();
        }
        self.proc = None;
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An `s3s-fs` of the test's own, on a free port with its own data directory; it keeps objects
/// on disk, so it can be killed and restarted — also with other keys (a store whose secret was
/// rotated under a running worker).
pub struct PrivateS3 {
    pub port: u16,
    dir: PathBuf,
    keys: (String, String),
    proc: Option<Proc>,
}

impl PrivateS3 {
    /// Starts a server with the shared test keys ([`crate::S3_KEY`], [`crate::S3_SECRET`]).
    pub fn start(dir: &Path) -> PrivateS3 {
        let mut s = PrivateS3 {
            port: free_port(),
            dir: dir.to_path_buf(),
            keys: (crate::S3_KEY.into(), crate::S3_SECRET.into()),
            proc: None,
        };
        std::fs::create_dir_all(dir.join("data")).unwrap();
        s.up();
        s
    }

    /// The endpoint URL (plain HTTP, path-style).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key and secret the server accepts now.
    pub fn keys(&self) -> (&str, &str) {
        (&self.keys.0, &self.keys.1)
    }

    /// (Re)starts the server on the same port and data; returns once it listens.
    pub fn up(&mut self) {
        let home = std::env::var("HOME").unwrap_or_default();
        let bin = [format!("{home}/.cargo/bin/s3s-fs"), "s3s-fs".to_string()]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| "s3s-fs".into());
        let log = self.dir.join("s3.log");
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.keys.0, "--secret-key", &self.keys.1])
            .arg(self.dir.join("data"))
            .stdout(Stdio::null())
            .stderr(append_log(&log))
            .spawn()
            .expect("start s3s-fs (deploy/local/s3.sh installs it)");
        self.proc = Some(Proc {
            child,
            name: "s3s-fs".into(),
            log,
        });
        wait_port(self.port);
    }

    /// Stops the server and starts it again accepting only `key` / `secret`.
    pub fn restart_with_keys(&mut self, key: &str, secret: &str) {
        self.kill();
        self.keys = (key.into(), secret.into());
        self.up();
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.proc = None;
    }
}
