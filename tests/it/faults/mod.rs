//! The fault suite (issue 14, docs/reliability.md): a PostgreSQL cluster and
//! a Redis of its own per scenario (initdb into a temporary folder, free
//! ports), so a scenario can restart, kill, cut and pause them without
//! touching the machine's shared instances; the real server against them;
//! a load generator; and the figures each scenario measured, printed as one
//! `FAULT <scenario>: ...` line (`scripts/fault-suite.sh` collects them).
//!
//! The quick scenarios run with every `cargo test`; the long ones are
//! `#[ignore]`d and run by `scripts/fault-suite.sh --long`.

mod concurrency;
mod database;
mod hostile;
mod lifecycle;
mod overload;
mod redis;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bi_data::pb::{CreateJobRequest, GetJobRequest, ListJobsRequest};
use tokio::{net::TcpListener, sync::watch};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::common::*;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a command as the `postgres` user (PostgreSQL refuses root).
fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("runuser {program}: {e}"))
}

fn pg_ctl(dir: &Path, args: &[&str]) -> std::process::Output {
    let data = dir.join("data");
    let mut all = vec!["-D", data.to_str().unwrap()];
    all.extend_from_slice(args);
    as_postgres(&format!("{PG_BIN}/pg_ctl"), &all)
}

fn pg_start(dir: &Path, port: u16) {
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
         -c max_connections=200 -c shared_buffers=32MB",
        dir.display()
    );
    let log = dir.join("log");
    let out = pg_ctl(dir, &["-w", "-t", "60", "-o", &opts, "-l", log.to_str().unwrap(), "start"]);
    assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
}

/// A new temporary folder for a cluster, owned by `postgres`.
fn cluster_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bi-data-pg-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        Command::new("chown").args(["postgres:postgres", dir.to_str().unwrap()]).status().unwrap().success()
    );
    dir
}

/// A PostgreSQL cluster of the test's own: its folder, port, and the roles
/// and database of a bi-data deployment (as scripts/dev-env.sh sets up).
pub struct PrivatePg {
    dir: PathBuf,
    pub port: u16,
}

impl PrivatePg {
    pub async fn start() -> PrivatePg {
        tokio::task::spawn_blocking(|| {
            let dir = cluster_dir();
            let data = dir.join("data");
            let out = as_postgres(
                &format!("{PG_BIN}/initdb"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale",
                    "C.UTF-8",
                    "--no-sync",
                ],
            );
            assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
            let pg = PrivatePg { dir, port: free_port() };
            pg.pg_ctl_start();
            pg.setup();
            pg
        })
        .await
        .unwrap()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The cluster's data directory (owned by `postgres`), for tools that
    /// work on it (tests/it/backup.rs: archive set-up and restart).
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        pg_ctl(&self.dir, args)
    }

    fn pg_ctl_start(&self) {
        pg_start(&self.dir, self.port);
    }

    fn psql(&self, db: &str, sql: &str) {
        let port = self.port.to_string();
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn setup(&self) {
        self.psql(
            "postgres",
            "CREATE ROLE bi_data_owner LOGIN CREATEROLE PASSWORD 'bi_data'; \
             CREATE ROLE bi_data_app NOLOGIN NOBYPASSRLS; GRANT bi_data_app TO bi_data_owner;",
        );
        self.psql("postgres", "CREATE DATABASE bi_data OWNER bi_data_owner TEMPLATE template0");
        let superuser =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/postgres/superuser.sql"))
                .unwrap();
        self.psql("bi_data", &superuser);
    }

    /// The service's URL of this cluster.
    pub fn url(&self) -> String {
        format!("postgres://bi_data_owner:bi_data@127.0.0.1:{}/bi_data", self.port)
    }

    /// A superuser connection (bypasses row-level security) for checks.
    pub async fn superuser(&self) -> tokio_postgres::Client {
        let url = format!("postgres://postgres@127.0.0.1:{}/bi_data", self.port);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    /// A fast shutdown (`pg_ctl stop -m fast`: sessions are terminated),
    /// `down_for` of outage, then a start. Returns when it accepts again.
    pub async fn restart_fast(&self, down_for: Duration) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let out = pg_ctl(&dir, &["-m", "fast", "-w", "stop"]);
            assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
        })
        .await
        .unwrap();
        tokio::time::sleep(down_for).await;
        self.start_again().await;
    }

    /// SIGKILL to the postmaster and every backend (a crash), `down_for` of
    /// outage, then a start (with crash recovery).
    pub async fn kill_and_start(&self, down_for: Duration) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let _ = Command::new("pkill").args(["-9", "-P", &pid]).status();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        tokio::time::sleep(down_for).await;
        // The killed postmaster leaves its pid file; start removes a stale one.
        self.start_again().await;
    }

    /// Starts the stopped cluster again; returns when it accepts connections.
    pub async fn start_again(&self) {
        let (dir, port) = (self.dir.clone(), self.port);
        tokio::task::spawn_blocking(move || pg_start(&dir, port)).await.unwrap();
    }

    /// A streaming replica of this cluster (`pg_basebackup -R`: it follows
    /// the primary over replication), in a folder of its own, on its own
    /// port; returns when it accepts connections (hot standby).
    pub async fn replica(&self) -> PrivatePg {
        let primary = self.port.to_string();
        tokio::task::spawn_blocking(move || {
            let dir = cluster_dir();
            let data = dir.join("data");
            let out = as_postgres(
                &format!("{PG_BIN}/pg_basebackup"),
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary,
                    "-U",
                    "postgres",
                    "-D",
                    data.to_str().unwrap(),
                    "-R",
                    "-X",
                    "stream",
                    "--checkpoint",
                    "fast",
                    "--no-sync",
                ],
            );
            assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
            let pg = PrivatePg { dir, port: free_port() };
            pg.pg_ctl_start();
            pg
        })
        .await
        .unwrap()
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to the postmaster and every
    /// backend: a server that hangs (accepts nothing, answers nothing)
    /// rather than refuses, or resumes.
    pub fn freeze(&self, frozen: bool) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let _ = Command::new("pkill").args([sig, "-P", &pid]).status();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// Stops the cluster at once (`pg_ctl stop -m immediate`).
    pub async fn stop_immediate(&self) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let out = pg_ctl(&dir, &["-m", "immediate", "-w", "stop"]);
            assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
        })
        .await
        .unwrap();
    }

    /// The cluster's own log (statements that failed are logged as ERROR).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// TLS (issue 15, part 3): a cluster that takes TCP connections only
/// encrypted (`hostssl`), with a certificate the test made.
impl PrivatePg {
    /// `start`, then ssl = on with `cert_pem`/`key_pem` and a pg_hba.conf
    /// with `hostssl` lines only for TCP (local sockets stay trust).
    pub async fn start_ssl(cert_pem: &str, key_pem: &str) -> PrivatePg {
        let pg = PrivatePg::start().await;
        pg.set_ssl_identity(cert_pem, key_pem);
        let conf = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
        let mut all = std::fs::read_to_string(pg.data().join("postgresql.conf")).unwrap();
        all.push_str(conf);
        std::fs::write(pg.data().join("postgresql.conf"), all).unwrap();
        std::fs::write(
            pg.data().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .unwrap();
        pg.reload();
        pg
    }

    /// Writes the server's certificate and key (owned by postgres, 0600);
    /// they take effect at the next `reload`.
    pub fn set_ssl_identity(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.data().join(name);
            std::fs::write(&path, pem).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres", path.to_str().unwrap()])
                    .status()
                    .unwrap()
                    .success()
            );
        }
    }

    /// `pg_ctl reload` (configuration, pg_hba.conf and TLS files re-read).
    pub fn reload(&self) {
        let out = self.pg_ctl(&["reload"]);
        assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis of the test's own (no persistence).
pub struct PrivateRedis {
    child: Child,
    pub port: u16,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // DEBUG SLEEP pauses it (Redis 7 refuses DEBUG otherwise).
            .args(["--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let r = PrivateRedis { child, port };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }

    /// `DEBUG SLEEP seconds`: Redis answers nothing meanwhile. The thread
    /// returns how long the command took (the pause, if it happened).
    pub fn pause(&self, seconds: f64) -> std::thread::JoinHandle<Duration> {
        let port = self.port.to_string();
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = Command::new("redis-cli")
                .args(["-p", &port, "DEBUG", "SLEEP", &seconds.to_string()])
                .output();
            assert!(
                out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("OK")),
                "DEBUG SLEEP refused"
            );
            started.elapsed()
        })
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy the test can cut (every connection dropped, new ones
/// refused) and restore: a network cut between the server and PostgreSQL.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(watch::channel(true).0);
        let up2 = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let mut rx = up2.subscribe();
                if !*rx.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        // A cut, not a close: both sides just stop hearing
                        // from each other (the sockets are dropped without
                        // a word to the peers' applications).
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up }
    }

    pub fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// The machine's load average (1, 5, 15 minutes), printed with figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Health of a server, polled.
pub async fn health(channel: &tonic::transport::Channel) -> Option<ServingStatus> {
    let mut c = HealthClient::new(channel.clone());
    let mut req = tonic::Request::new(HealthCheckRequest { service: String::new() });
    req.set_timeout(Duration::from_millis(500));
    let r = c.check(req).await.ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

/// Waits for `want`; the time it took, or None after `within`.
pub async fn until_health(
    channel: &tonic::transport::Channel,
    want: ServingStatus,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if health(channel).await == Some(want) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// What the load generator saw.
#[derive(Default)]
pub struct Tally {
    /// `job_url`s of creates answered OK.
    pub acked: Vec<String>,
    pub codes: BTreeMap<&'static str, u64>,
    /// (when, latency, code) of every call, for per-phase figures.
    pub calls: Vec<(Instant, Duration, Code)>,
    /// Calls answered after their deadline (more than 50 ms late).
    pub late: u64,
    /// Creates that failed: (job_url, request_id), to retry.
    pub failed_writes: Vec<(String, String)>,
    /// A few errors as they were answered (code, message), for reports.
    pub samples: Vec<String>,
}

impl Tally {
    /// p99 latency of calls started within `from..to`.
    pub fn p99_between(&self, from: Instant, to: Instant) -> Duration {
        let mut l: Vec<Duration> =
            self.calls.iter().filter(|(t, _, _)| *t >= from && *t < to).map(|c| c.1).collect();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l.sort_unstable();
        l[(l.len() * 99 / 100).min(l.len() - 1)]
    }

    pub fn codes_between(&self, from: Instant, to: Instant) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for (t, _, c) in &self.calls {
            if *t >= from && *t < to {
                *m.entry(code_name(*c)).or_insert(0) += 1;
            }
        }
        m
    }

    /// The codes other than OK and the ones allowed.
    pub fn unexpected(&self, allowed: &[Code]) -> Vec<(&'static str, u64)> {
        self.codes
            .iter()
            .filter(|(c, _)| **c != "OK" && !allowed.iter().any(|a| code_name(*a) == **c))
            .map(|(c, n)| (*c, *n))
            .collect()
    }
}

pub fn code_name(c: Code) -> &'static str {
    bi_data::api::middleware::rpc::code_name(c as i32)
}

/// A steady load of creates (each with its own request id) and reads
/// (GetJob of a seeded job, ListJobs page 1) at about `writes` and `reads`
/// calls per second, each with `deadline`, until `stop` turns true.
pub struct Load {
    pub tally: Arc<Mutex<Tally>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub async fn start(
        channel: tonic::transport::Channel,
        t: &Tenant,
        writes: u32,
        reads: u32,
        deadline: Duration,
    ) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, _) = watch::channel(false);
        let mut jobs = bi_data::pb::job_service_client::JobServiceClient::new(channel.clone());
        let seed = jobs
            .create_job(authed(
                &t.writer,
                CreateJobRequest { job: Some(job("seed")), request_id: String::new() },
            ))
            .await
            .expect("seed job")
            .into_inner();
        let mut tasks = Vec::new();
        let per_task = |rate: u32, n: u32| Duration::from_secs_f64(f64::from(n) / f64::from(rate.max(1)));
        let (write_tasks, read_tasks) = (writes.div_ceil(50).max(1), reads.div_ceil(100).max(1));
        for w in 0..write_tasks {
            let (c, tally, token) = (jobs.clone(), tally.clone(), t.writer.clone());
            tasks.push(tokio::spawn(paced(per_task(writes, write_tasks), stop.subscribe(), move |n| {
                let (mut c, tally, token) = (c.clone(), tally.clone(), token.clone());
                async move {
                    let url = format!("https://faults.test/{w}/{n}/{}", Uuid::new_v4().simple());
                    let rid = Uuid::new_v4().to_string();
                    let mut req = authed(&token, load_job(&url, &rid));
                    req.set_timeout(deadline);
                    let started = Instant::now();
                    let r = c.create_job(req).await;
                    record(&tally, started, deadline, r.as_ref().err());
                    match r {
                        Ok(_) => tally.lock().unwrap().acked.push(url),
                        Err(_) => tally.lock().unwrap().failed_writes.push((url, rid)),
                    }
                }
            })));
        }
        for i in 0..read_tasks {
            let (c, tally, token, id) = (jobs.clone(), tally.clone(), t.reader.clone(), seed.id.clone());
            tasks.push(tokio::spawn(paced(per_task(reads, read_tasks), stop.subscribe(), move |n| {
                let (mut c, tally, token, id) = (c.clone(), tally.clone(), token.clone(), id.clone());
                async move {
                    let started = Instant::now();
                    let error = if (n + u64::from(i)).is_multiple_of(5) {
                        let mut req = authed(&token, ListJobsRequest { page_size: 20, ..Default::default() });
                        req.set_timeout(deadline);
                        c.list_jobs(req).await.err()
                    } else {
                        let mut req = authed(&token, GetJobRequest { id });
                        req.set_timeout(deadline);
                        c.get_job(req).await.err()
                    };
                    record(&tally, started, deadline, error.as_ref());
                }
            })));
        }
        Load { tally, stop, tasks }
    }

    pub async fn stop(self) -> Tally {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        Arc::try_unwrap(self.tally).ok().expect("load tasks ended").into_inner().unwrap()
    }
}

/// Runs `call(n)` for n = 1, 2, ... every `every` (one at a time) until
/// `stop` turns true.
async fn paced<F, Fut>(every: Duration, mut stop: watch::Receiver<bool>, mut call: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    let mut n = 0u64;
    while !*stop.borrow() {
        tokio::select! { _ = tick.tick() => {}, _ = stop.changed() => break }
        n += 1;
        call(n).await;
    }
}

/// The create the load sends for `url` (the same again for a retry).
pub fn load_job(url: &str, request_id: &str) -> CreateJobRequest {
    let mut j = job("load");
    j.job_url = url.to_owned();
    CreateJobRequest { job: Some(j), request_id: request_id.to_owned() }
}

/// Retries every failed create with its own request id until it is
/// answered OK; returns their URLs (each must now be stored exactly once).
pub async fn retry_failed(
    channel: tonic::transport::Channel,
    t: &Tenant,
    failed: &[(String, String)],
) -> Vec<String> {
    let mut c = bi_data::pb::job_service_client::JobServiceClient::new(channel);
    for (url, rid) in failed {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut req = authed(&t.writer, load_job(url, rid));
            req.set_timeout(Duration::from_secs(5));
            match c.create_job(req).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(tries < 20, "retry of {url} keeps failing: {e:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    failed.iter().map(|(u, _)| u.clone()).collect()
}

fn record(tally: &Mutex<Tally>, started: Instant, deadline: Duration, error: Option<&tonic::Status>) {
    let took = started.elapsed();
    let code = error.map_or(Code::Ok, |e| e.code());
    let mut t = tally.lock().unwrap();
    if let Some(e) = error
        && t.samples.len() < 10
        && !t.samples.iter().any(|s| s.starts_with(code_name(code)))
    {
        t.samples.push(format!("{}: {}", code_name(code), e.message()));
    }
    *t.codes.entry(code_name(code)).or_insert(0) += 1;
    t.calls.push((started, took, code));
    if took > deadline + Duration::from_millis(50) {
        t.late += 1;
    }
}

/// The `job_url`s of a tenant's live jobs, read as superuser.
pub async fn stored_urls(pg: &PrivatePg, tenant: Uuid) -> Vec<String> {
    let db = pg.superuser().await;
    db.query("SELECT job_url FROM jobs WHERE tenant_id = $1 AND delete_time IS NULL", &[&tenant])
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect()
}

/// Acknowledged writes vs rows found: (lost, duplicated).
pub fn compare(acked: &[String], stored: &[String]) -> (usize, usize) {
    let stored_set: std::collections::HashSet<&String> = stored.iter().collect();
    let lost = acked.iter().filter(|u| !stored_set.contains(u)).count();
    let dup = stored.len() - stored_set.len();
    (lost, dup)
}

/// A server process (the real binary) against `db`, on its own port.
pub struct Process {
    pub child: Child,
    pub addr: String,
    pub channel: tonic::transport::Channel,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(db: &str, extra: &[&str]) -> Process {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::env::temp_dir().join(format!("bi-data-server-{}.log", Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_bi-data"))
            .args(["serve", "--listen", &addr, "--metrics-listen", "127.0.0.1:0", "--redis-url", ""])
            .args(extra)
            .env("DATABASE_URL", db)
            .env_remove("MIGRATION_DATABASE_URL")
            .env("JWT_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        Process { child, addr, channel, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// Waits for the process to exit; its exit code, or None after `within`.
    pub async fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
