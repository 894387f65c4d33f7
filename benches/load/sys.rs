//! The machine side: the server as a child process, its RSS and CPU from
//! /proc, PostgreSQL backends' CPU, and pgbench.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::driver::Stats;

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// user + system CPU time of a process (all threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (USER_HZ).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Samples a process's RSS every 100 ms until stopped; keeps the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { stop, peak, task }
    }

    /// Peak RSS in KiB.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// The server under test, started from its release binary.
pub struct Server {
    child: Child,
    pub addr: String,
    /// Its /metrics listener, `127.0.0.1:port`.
    pub metrics: String,
}

pub struct ServerArgs<'a> {
    pub bin: &'a Path,
    pub database_url: &'a str,
    pub jwt_secret: &'a str,
    pub pool_size: usize,
    pub log: &'a Path,
    pub extra: &'a [String],
    pub env: &'a [(String, String)],
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts the server and waits until its health says SERVING; returns
    /// it with the time that took from the spawn.
    pub async fn start(a: &ServerArgs<'_>) -> Result<(Server, Duration), String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let metrics_port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.log)
            .map_err(|e| format!("server log {}: {e}", a.log.display()))?;
        let t0 = Instant::now();
        let child = Command::new(a.bin)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--pool-size", &a.pool_size.to_string()])
            .args(a.extra)
            .envs(a.env.iter().map(|(k, v)| (k, v)))
            .env("DATABASE_URL", a.database_url)
            .env("JWT_SECRET", a.jwt_secret)
            .env_remove("MIGRATION_DATABASE_URL")
            .env_remove("DATABASE_REPLICA_URL")
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", a.bin.display()))?;
        let mut server = Server {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            metrics: format!("127.0.0.1:{metrics_port}"),
        };
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if serving(&server.addr).await {
                return Ok((server, t0.elapsed()));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("server exited with {status}; see {}", a.log.display()));
            }
            if Instant::now() > deadline {
                server.stop();
                return Err(format!("server not SERVING within 30 s; see {}", a.log.display()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful), then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// `GET /metrics` of a server: `name{labels} value` lines as a map.
pub fn scrape(addr: &str) -> HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut out = HashMap::new();
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return out };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").is_err() {
        return out;
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    for line in raw.lines().filter(|l| l.starts_with("bi_data_")) {
        if let Some((k, v)) = line.rsplit_once(' ')
            && let Ok(v) = v.parse()
        {
            out.insert(k.to_owned(), v);
        }
    }
    out
}

/// A redis-server of the bench's own on a free port, without persistence,
/// so no entry of an earlier run (or of the dev environment) is read.
pub struct Redis {
    child: Child,
    pub url: String,
}

impl Redis {
    pub async fn start(bin: &Path) -> Result<Redis, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let redis = Redis { child, url: format!("redis://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not listen within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(redis)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One health check on a fresh connection: SERVING or not (yet).
pub async fn serving(addr: &str) -> bool {
    let Ok(endpoint) = Channel::from_shared(addr.to_owned()) else { return false };
    let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_millis(500), endpoint.connect()).await else {
        return false;
    };
    let mut c = HealthClient::new(channel);
    matches!(
        tokio::time::timeout(Duration::from_millis(500), c.check(HealthCheckRequest { service: String::new() })).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

/// pgbench's figures for the same client count.
pub struct Pgbench {
    pub stats: Stats,
    pub connections: usize,
}

/// `pgbench -S -M prepared` (select-only, one prepared statement per
/// transaction, no explicit BEGIN) for `seconds`; latencies from its
/// per-transaction log.
pub fn pgbench(bin: &Path, url: &str, clients: usize, seconds: u64, dir: &Path) -> Result<Pgbench, String> {
    let logdir = dir.join("pgbench-log");
    let _ = fs::remove_dir_all(&logdir);
    fs::create_dir_all(&logdir).map_err(|e| format!("{}: {e}", logdir.display()))?;
    let prefix = logdir.join("tx");
    let out = Command::new(bin)
        .args(["-S", "-M", "prepared", "-n"])
        .args(["-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string()])
        .arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("pgbench failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr)));
    }
    let tps: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {stdout}"))?;
    let failed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut lat = Vec::new();
    for entry in fs::read_dir(&logdir).map_err(|e| e.to_string())?.flatten() {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            // client_id transaction_no time_us script_no time_epoch time_us
            if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse::<u32>().ok()) {
                lat.push(us);
            }
        }
    }
    let window = Duration::from_secs(seconds);
    let mut stats = Stats::from_parts(lat.len() as u64, failed, window, lat);
    // pgbench's own tps (excludes connection set-up) is the throughput figure.
    stats.answered = (tps * window.as_secs_f64()).round() as u64;
    Ok(Pgbench { stats, connections: clients })
}

/// Where the bench writes its logs and reports.
pub fn out_dir() -> PathBuf {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    root.join("bench")
}
