//! Child processes of the benchmark — `namegate serve` replicas and the bare server — killed when
//! dropped, so an early return or a panic leaves nothing running (`scripts/bench` also kills the
//! whole process group on exit).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::load;

pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
pub fn rss(pid: u32) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (`state`); utime and
    // stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Duration::from_secs_f64(
        (ticks(11) + ticks(12)) as f64 / clock_ticks() as f64,
    ))
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The 1-minute load average of the machine.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// A child killed on drop.
#[derive(Debug)]
pub struct Guarded {
    pub child: Child,
    pub what: String,
}

impl Guarded {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (bounded); SIGKILL if it does not exit in `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `namegate serve` process.
#[derive(Debug)]
pub struct Replica {
    pub proc: Guarded,
    pub addr: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    /// From spawn to `/readyz` 200.
    pub ready_after: Duration,
}

/// The bench's replicas take signals as they are: no owner resolution, every namespace in scope.
const UNRESOLVED: [&str; 4] = ["--resolve-targets", "false", "--scope", "all"];

impl Replica {
    /// Starts `namegate serve` (release build, `--auth none`, SQLite audit in `dir`, `--log-level
    /// warn`) on `namespace` and waits for `/readyz` (at most `ready_timeout`).
    /// A replica for the admission figures: its workloads are names, not objects, so target
    /// resolution is off (explicitly: `--resolve-targets false --scope all`).
    pub async fn start(
        namegate: &Path,
        namespace: &str,
        dir: &Path,
        name: &str,
        flush_interval: Duration,
        ready_timeout: Duration,
    ) -> Result<Replica, String> {
        Self::start_with(
            namegate,
            namespace,
            dir,
            name,
            flush_interval,
            ready_timeout,
            &UNRESOLVED,
        )
        .await
    }

    /// [`Replica::start`] with its audit store at `audit_url` (e.g. PostgreSQL) instead of a SQLite
    /// file in `dir`.
    pub async fn start_with_audit(
        namegate: &Path,
        namespace: &str,
        dir: &Path,
        name: &str,
        flush_interval: Duration,
        ready_timeout: Duration,
        audit_url: &str,
    ) -> Result<Replica, String> {
        let extra = [UNRESOLVED.as_slice(), &["--audit-url", audit_url]].concat();
        Self::start_with(
            namegate,
            namespace,
            dir,
            name,
            flush_interval,
            ready_timeout,
            &extra,
        )
        .await
    }

    /// [`Replica::start`] with `extra` flags instead of the unresolved defaults (an `--audit-url`
    /// among them replaces the SQLite file in `dir`).
    pub async fn start_with(
        namegate: &Path,
        namespace: &str,
        dir: &Path,
        name: &str,
        flush_interval: Duration,
        ready_timeout: Duration,
        extra: &[&str],
    ) -> Result<Replica, String> {
        let sqlite_url = format!(
            "sqlite://{}",
            dir.join(format!("{name}-audit.db")).display()
        );
        let default_audit = ["--audit-url", sqlite_url.as_str()];
        let audit: &[&str] = if extra.contains(&"--audit-url") {
            &[]
        } else {
            &default_audit
        };
        let (port, health, metrics) = (free_port()?, free_port()?, free_port()?);
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err_file = log_file.try_clone().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new(namegate)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--health-listen", &format!("127.0.0.1:{health}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--namespace", namespace])
            .args(audit)
            .args([
                "--audit-spill-path",
                &dir.join(format!("{name}-spill.jsonl"))
                    .display()
                    .to_string(),
            ])
            // `--auth none` unless `extra` chooses (the auth rows, authcost.rs).
            .args(if extra.contains(&"--auth") {
                &[][..]
            } else {
                &["--auth", "none"][..]
            })
            .args(["--log-level", "warn"])
            .args(["--shutdown-delay", "0s"])
            .args(extra)
            .args([
                "--flush-interval",
                &humantime::format_duration(flush_interval).to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(err_file))
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", namegate.display()))?;
        let mut r = Replica {
            proc: Guarded {
                child,
                what: format!("namegate serve ({name})"),
            },
            addr: ([127, 0, 0, 1], port).into(),
            health: ([127, 0, 0, 1], health).into(),
            metrics: ([127, 0, 0, 1], metrics).into(),
            log,
            ready_after: Duration::ZERO,
        };
        let deadline = started + ready_timeout;
        loop {
            if let Ok((200, _, _)) =
                load::once(r.health, http::Method::GET, "/readyz", Bytes::new()).await
            {
                r.ready_after = started.elapsed();
                return Ok(r);
            }
            if let Ok(Some(status)) = r.proc.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before becoming ready; log {}:\n{}",
                    r.proc.what,
                    r.log.display(),
                    r.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} not ready within {ready_timeout:?}; log:\n{}",
                    r.proc.what,
                    r.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls a metric of the replica until `ok` holds (true) or `timeout` passes (false).
    pub async fn wait_metric(
        &self,
        name: &str,
        ok: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.metric(name).await.is_some_and(&ok) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A gauge or counter of the replica's own `/metrics` (sum over label sets).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, _, body) = load::once(self.metrics, http::Method::GET, "/metrics", Bytes::new())
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&body);
        let mut sum = None;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *sum.get_or_insert(0.0) += v;
            }
        }
        sum
    }
}

/// The bare hyper server as a child process (`namegate-bench bare-server`).
pub fn start_bare(
    canned_dir: &Path,
    status: u16,
    headers: &[(String, String)],
) -> Result<(Guarded, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let body = canned_dir.join("bare-response.json");
    let mut cmd = Command::new(exe);
    cmd.arg("bare-server")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--status", &status.to_string()])
        .args(["--body-file", &body.display().to_string()]);
    for (k, v) in headers {
        cmd.args(["--header", &format!("{k}: {v}")]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning the bare server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let guard = Guarded {
        child,
        what: "bare hyper server".into(),
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("the bare server said {line:?}"))?;
    Ok((guard, addr))
}
