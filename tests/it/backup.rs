//! Backup, point-in-time recovery and tenant moves (issue 15, part 1;
//! docs/backup.md): `scripts/backup.sh` against private PostgreSQL clusters
//! (tests/it/faults), never the shared one. Rows are written through the
//! real server's gRPC API and `bi-data demo-data` (every table), the
//! restored clusters are compared with the source row for row.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bi_data::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::{
    common::*,
    faults::{PrivatePg, Process, free_port, load_average, until_health},
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/backup.sh");
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A scratch folder of the test, removed at the end, with the clusters the
/// test restored into it (stopped first).
struct Work {
    dir: PathBuf,
    clusters: Vec<PathBuf>,
}

impl Work {
    fn new() -> Work {
        let dir = std::env::temp_dir().join(format!("bi-data-backup-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Work { dir, clusters: Vec::new() }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        for c in &self.clusters {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
                .arg(c)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one run of scripts/backup.sh answered.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn backup_sh(args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new("bash").arg(SCRIPT).args(args).stdin(Stdio::null()).output().expect("bash");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// scripts/backup.sh that must succeed.
fn backup_ok(args: &[&str]) -> Run {
    let r = backup_sh(args);
    assert!(r.ok, "backup.sh {args:?} failed:\n{}", r.stderr);
    r
}

/// The superuser URL of a cluster's bi_data database (the scripts' input).
fn su_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/bi_data")
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&su_url(port), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// Every row of every table of the database (partitioned tables through
/// their parent), as text, sorted: the full content, not counts.
async fn snapshot(port: u16) -> BTreeMap<String, Vec<String>> {
    let db = connect(port).await;
    let tables: Vec<String> = db
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut all = BTreeMap::new();
    for t in tables {
        let mut rows: Vec<String> = db
            .query(&format!("SELECT x::text FROM {t} x"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        all.insert(t, rows);
    }
    all
}

fn total_rows(s: &BTreeMap<String, Vec<String>>) -> usize {
    s.values().map(Vec::len).sum()
}

/// `bi-data demo-data` against a cluster: a new tenant with rows in the
/// company, job, outreach and document tables; its id.
fn demo_tenant(pg: &PrivatePg, jobs: usize) -> Uuid {
    let out = Command::new(env!("CARGO_BIN_EXE_bi-data"))
        .args(["demo-data", "--jobs", &jobs.to_string()])
        .env("DATABASE_URL", pg.url())
        .env_remove("MIGRATION_DATABASE_URL")
        .env_remove("JWT_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "demo-data: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().find_map(|l| l.strip_prefix("tenant_id=")).expect("tenant_id= line");
    id.parse().unwrap()
}

/// Jobs (with idempotency keys), an application of the first and an
/// employer response to it, through the gRPC API; the jobs created.
async fn api_writes(ch: &tonic::transport::Channel, t: &Tenant, tag: &str, n: usize) -> Vec<pb::Job> {
    let mut jobs = pb::job_service_client::JobServiceClient::new(ch.clone());
    let mut created = Vec::new();
    for i in 0..n {
        let mut j = job(&format!("{tag} {i}"));
        j.job_url = format!("https://backup.test/{tag}/{i}");
        let req = pb::CreateJobRequest { job: Some(j), request_id: Uuid::new_v4().to_string() };
        created.push(jobs.create_job(authed(&t.writer, req)).await.expect("create job").into_inner());
    }
    let app = pb::Application {
        job_id: created[0].id.clone(),
        status: pb::ApplicationStatus::Screening as i32,
        notes: format!("{tag} application"),
        ..Default::default()
    };
    let app = jobs
        .create_application(authed(
            &t.writer,
            pb::CreateApplicationRequest { application: Some(app), request_id: String::new() },
        ))
        .await
        .expect("create application")
        .into_inner();
    let resp = pb::EmployerResponse {
        application_id: app.id,
        response_type: "email".into(),
        subject_line: format!("{tag} reply"),
        ..Default::default()
    };
    jobs.create_employer_response(authed(
        &t.writer,
        pb::CreateEmployerResponseRequest { employer_response: Some(resp), request_id: String::new() },
    ))
    .await
    .expect("create employer response");
    created
}

/// Updates the title of `edit` and deletes `delete` (soft delete), through the API.
async fn api_changes(ch: &tonic::transport::Channel, t: &Tenant, edit: &[pb::Job], delete: &[pb::Job]) {
    let mut jobs = pb::job_service_client::JobServiceClient::new(ch.clone());
    for j in edit {
        let patch =
            pb::Job { id: j.id.clone(), title: format!("{} (edited)", j.title), ..Default::default() };
        let req = pb::UpdateJobRequest {
            job: Some(patch),
            update_mask: Some(prost_types::FieldMask { paths: vec!["title".into()] }),
            request_id: Uuid::new_v4().to_string(),
        };
        jobs.update_job(authed(&t.writer, req)).await.expect("update job");
    }
    for j in delete {
        let req = pb::DeleteJobRequest { id: j.id.clone(), ..Default::default() };
        jobs.delete_job(authed(&t.writer, req)).await.expect("delete job");
    }
}

/// The server's clock now, as recovery_target_time reads it.
async fn server_time(db: &tokio_postgres::Client) -> String {
    db.query_one(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn current_lsn(db: &tokio_postgres::Client) -> String {
    db.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0)
}

/// Restores into `work/<name>` with `target` (e.g. ["--to-time", t]), starts
/// it on a free port; the port and how long the restore took.
fn restore(work: &mut Work, name: &str, target: &[&str]) -> (u16, Duration) {
    let port = free_port();
    let dir = work.path(name);
    work.clusters.push(PathBuf::from(&dir));
    let mut args = vec![
        "restore",
        "--backups",
        &work.path("backups"),
        "--archive",
        &work.path("archive"),
        "--target",
        &dir,
        "--socket-dir",
        &dir,
        "--start",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(["--port".to_owned(), port.to_string()]);
    args.extend(target.iter().map(|s| (*s).to_owned()));
    let r = backup_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (port, r.took)
}

/// The cluster's archive_command, run as the server runs it (`sh -c` in a
/// data directory) on a segment of the test's own: archived once, the same
/// bytes again are accepted, other bytes under that name are refused and
/// leave the archived copy as it was; no temporary file is left.
async fn archive_command_never_overwrites(db: &tokio_postgres::Client, work: &Work, archive: &str) {
    let cmd: String = db.query_one("SHOW archive_command", &[]).await.unwrap().get(0);
    let fake = work.path("fake-pgdata");
    std::fs::create_dir_all(format!("{fake}/pg_wal")).unwrap();
    let name = "0000000A00000000000000FF"; // a timeline the cluster never reaches
    let run = |content: &[u8]| {
        std::fs::write(format!("{fake}/pg_wal/{name}"), content).unwrap();
        let sh = cmd.replace("%p", &format!("pg_wal/{name}")).replace("%f", name);
        Command::new("sh").arg("-c").arg(sh).current_dir(&fake).status().unwrap().success()
    };
    assert!(run(b"segment one"), "first archive of a segment");
    assert!(run(b"segment one"), "the same bytes again (a retry) succeed");
    assert!(!run(b"segment two"), "other bytes under an archived name are refused");
    assert_eq!(std::fs::read(format!("{archive}/{name}")).unwrap(), b"segment one");
    let leftovers: Vec<_> = std::fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .filter(|f| f.starts_with('.') || f.starts_with("0000000A"))
        .collect();
    assert_eq!(leftovers, [name], "temporary files left in the archive");
    std::fs::remove_file(format!("{archive}/{name}")).unwrap();
}

/// Files of a directory (name -> bytes).
fn files(dir: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Base backup, writes, a time T and an LSN L, more writes: the cluster
/// restored to T holds exactly the rows it held at T, the one restored to L
/// exactly those at L; after pruning to the newest backup the archive keeps
/// only what that backup needs, and a restore to the end still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitr_restores_exactly_the_rows_of_a_time_and_of_an_lsn() {
    let started = Instant::now();
    let pg = PrivatePg::start().await;
    let mut work = Work::new();
    let (archive, backups) = (work.path("archive"), work.path("backups"));
    let url = su_url(pg.port);
    let data = pg.data_dir();
    backup_ok(&[
        "archive-setup",
        "--url",
        &url,
        "--archive",
        &archive,
        "--pgdata",
        data.to_str().unwrap(),
        "--restart",
        "--log",
        &format!("{}.log", data.display()),
    ]);
    let db = pg.superuser().await;
    let mode: String = db.query_one("SHOW archive_mode", &[]).await.unwrap().get(0);
    assert_eq!(mode, "on");
    archive_command_never_overwrites(&db, &work, &archive).await;

    // Phase 0, before the base backup: a server (it migrates), tenant A
    // through the API, a demo tenant in every table.
    let server = Process::spawn(&pg.url(), &[]);
    let up = until_health(&server.channel, ServingStatus::Serving, Duration::from_secs(60)).await;
    assert!(up.is_some(), "server never SERVING: {}", server.logs());
    let (a, b) = (Tenant::new(), Tenant::new());
    let a0 = api_writes(&server.channel, &a, "a0", 6).await;
    demo_tenant(&pg, 30);

    let base = backup_ok(&["base", "--url", &url, "--backups", &backups, "--label", "first"]);
    let first = base.stdout.trim().to_owned();
    let info = std::fs::read_to_string(format!("{first}/backup.info")).unwrap();
    let size_kib: u64 =
        info.lines().find_map(|l| l.strip_prefix("SIZE_BYTES=")).and_then(|v| v.parse::<u64>().ok()).unwrap()
            / 1024;
    assert!(std::path::Path::new(&format!("{first}/backup_manifest")).exists());

    // Phase 1, then T.
    let a1 = api_writes(&server.channel, &a, "a1", 6).await;
    api_writes(&server.channel, &b, "b1", 4).await;
    demo_tenant(&pg, 20);
    let s1 = snapshot(pg.port).await;
    let t1 = server_time(&db).await;
    assert_eq!(snapshot(pg.port).await, s1, "something wrote while T was taken");

    // Phase 2 (updates and deletes through the API, a hard delete and an
    // update in SQL), then L.
    api_changes(&server.channel, &a, &a0[..2], &a1[1..3]).await;
    let b2 = api_writes(&server.channel, &b, "b2", 3).await;
    db.execute("UPDATE companies SET description = 'phase 2' WHERE description IS DISTINCT FROM 'x'", &[])
        .await
        .unwrap();
    let s2 = snapshot(pg.port).await;
    let l2 = current_lsn(&db).await;
    assert_eq!(snapshot(pg.port).await, s2);

    // Phase 3, then the segments are closed and archived.
    api_changes(&server.channel, &b, &b2[..1], &b2[1..]).await;
    api_writes(&server.channel, &a, "a3", 3).await;
    db.execute("DELETE FROM employer_responses WHERE tenant_id = $1", &[&a.id]).await.unwrap();
    let s3 = snapshot(pg.port).await;
    backup_ok(&["wal-switch", "--url", &url]);
    assert!(s1 != s2 && s2 != s3, "the phases must differ for the comparisons to mean anything");
    assert!(total_rows(&s1) > 300, "too few rows to mean much: {}", total_rows(&s1));

    // Restore to T: exactly phase 1.
    let (p_time, took_time) = restore(&mut work, "at-time", &["--to-time", &t1]);
    let r1 = snapshot(p_time).await;
    for (table, rows) in &s1 {
        assert_eq!(Some(rows), r1.get(table), "table {table} restored to {t1} differs");
    }
    assert_eq!(r1, s1);
    let rdb = connect(p_time).await;
    let recovering: bool = rdb.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().get(0);
    assert!(!recovering, "the restored cluster was promoted");

    // Restore to L: exactly phase 2.
    let (p_lsn, took_lsn) = restore(&mut work, "at-lsn", &["--to-lsn", &l2]);
    assert_eq!(snapshot(p_lsn).await, s2, "restored to {l2}");

    // Retention: a second backup (plain format this time), prune to one;
    // the archive keeps nothing older than that backup's first segment, and
    // it restores to the end.
    drop(server);
    std::thread::sleep(Duration::from_millis(1100)); // a new backup name (second resolution)
    let second =
        backup_ok(&["base", "--url", &url, "--backups", &backups, "--label", "second", "--format", "plain"]);
    let second = second.stdout.trim().to_owned();
    let before = std::fs::read_dir(&archive).unwrap().count();
    backup_ok(&["prune", "--backups", &backups, "--archive", &archive, "--keep", "1"]);
    assert!(!Path::new(&first).exists(), "the older backup was pruned");
    assert!(Path::new(&second).exists(), "the newest backup is kept");
    let second_info = std::fs::read_to_string(format!("{second}/backup.info")).unwrap();
    let first_seg = second_info.lines().find_map(|l| l.strip_prefix("START_WAL_FILE=")).unwrap().to_owned();
    let left: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .collect();
    assert!(left.len() < before, "prune removed no WAL: {left:?}");
    assert!(
        left.iter().filter(|f| !f.ends_with(".history")).all(|f| f.as_str() >= first_seg.as_str()),
        "segments older than {first_seg} left: {left:?}"
    );
    let (p_latest, _) = restore(&mut work, "latest", &["--latest"]);
    assert_eq!(snapshot(p_latest).await, s3, "restored to the end of the archive");
    // A restore to T now has no backup old enough.
    let refused = backup_sh(&[
        "restore",
        "--backups",
        &backups,
        "--archive",
        &archive,
        "--target",
        &work.path("too-early"),
        "--to-time",
        &t1,
    ]);
    assert!(!refused.ok && refused.stderr.contains("no backup"), "{}", refused.stderr);

    println!(
        "BACKUP pitr: rows at T {}, base backup {size_kib} KiB in {:.2}s, restore to time {:.2}s, \
         to LSN {:.2}s, whole test {:.1}s, load average {}",
        total_rows(&s1),
        base.took.as_secs_f64(),
        took_time.as_secs_f64(),
        took_lsn.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

/// Tenant A exported from a cluster that also holds B, imported into a
/// fresh cluster and exported again there: the same files, byte for byte;
/// B is not there; an import that fails midway, a second import and one
/// from another schema version are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_between_clusters_byte_for_byte() {
    let started = Instant::now();
    let (src, dst) = tokio::join!(PrivatePg::start(), PrivatePg::start());
    let work = Work::new();
    let a = demo_tenant(&src, 40);
    let b = demo_tenant(&src, 20);
    // applications and employer_responses (demo-data writes none), rows
    // with quotes, tabs, newlines and backslashes in text.
    let sdb = src.superuser().await;
    for t in [a, b] {
        sdb.batch_execute(&format!(
            "INSERT INTO applications (tenant_id, id, job_id, notes) \
             SELECT tenant_id, gen_random_uuid(), id, E'it''s\\ta \"note\"\\nwith \\\\ lines' \
             FROM jobs WHERE tenant_id = '{t}' ORDER BY id LIMIT 5; \
             INSERT INTO employer_responses (tenant_id, id, application_id, response_type) \
             SELECT tenant_id, gen_random_uuid(), id, 'email' FROM applications WHERE tenant_id = '{t}';"
        ))
        .await
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bi-data"))
        .arg("migrate")
        .env("DATABASE_URL", dst.url())
        .env_remove("MIGRATION_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));

    let (a_src, a_dst, a_again) = (work.path("a-src"), work.path("a-dst"), work.path("a-again"));
    let export = backup_ok(&[
        "tenant-export",
        "--url",
        &su_url(src.port),
        "--tenant",
        &a.to_string(),
        "--out",
        &a_src,
    ]);
    let exported = files(&a_src);
    let manifest = String::from_utf8(exported["manifest.tsv"].clone()).unwrap();
    let tables: Vec<Vec<&str>> =
        manifest.lines().filter(|l| l.starts_with("table\t")).map(|l| l.split('\t').collect()).collect();
    // Every tenant table of the schema, each once (a partitioned table
    // through its parent only).
    let db_tables: i64 = sdb
        .query_one(
            "SELECT count(*) FROM pg_class c WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND c.relnamespace = 'public'::regnamespace AND EXISTS (SELECT 1 FROM pg_attribute a \
             WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables.len() as i64, db_tables, "{manifest}");
    for t in &tables {
        let want: i64 = sdb
            .query_one(&format!("SELECT count(*) FROM {} WHERE tenant_id = $1", t[1]), &[&a])
            .await
            .unwrap()
            .get(0);
        assert_eq!(t[4], want.to_string(), "rows of {} in the manifest", t[1]);
    }
    let nonempty = tables.iter().filter(|t| t[4] != "0").count();
    assert!(nonempty >= 12, "most tables hold rows of A: {manifest}");
    let total: usize = tables.iter().map(|t| t[4].parse::<usize>().unwrap()).sum();
    // As the owner role (row-level security applies; the script scopes the
    // session to the tenant): the same export.
    let as_owner = work.path("a-owner");
    backup_ok(&["tenant-export", "--url", &src.url(), "--tenant", &a.to_string(), "--out", &as_owner]);
    assert_eq!(files(&as_owner), exported, "the owner's export differs from the superuser's");

    // A broken import (the last table's rows name another tenant) fails
    // inside the one transaction: nothing of A is left in the target.
    let broken = work.path("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let last = tables.iter().rev().find(|t| t[4] != "0").unwrap();
    let mut broken_manifest = manifest.clone();
    for (name, bytes) in &exported {
        let mut bytes = bytes.clone();
        if name == last[3] {
            bytes =
                String::from_utf8(bytes).unwrap().replace(&a.to_string(), &Uuid::new_v4().to_string()).into();
            let sha = sha256_hex(&bytes);
            broken_manifest = broken_manifest.replace(last[5], &sha);
        }
        std::fs::write(format!("{broken}/{name}"), bytes).unwrap();
    }
    std::fs::write(format!("{broken}/manifest.tsv"), &broken_manifest).unwrap();
    let r = backup_sh(&["tenant-import", "--url", &su_url(dst.port), "--in", &broken]);
    assert!(!r.ok, "a broken import is refused");
    let empty = snapshot(dst.port).await;
    let tenant_rows = |s: &BTreeMap<String, Vec<String>>| {
        s.iter().filter(|(t, _)| !t.contains("refinery")).map(|(_, r)| r.len()).sum::<usize>()
    };
    assert_eq!(tenant_rows(&empty), 0, "the failed import left rows: {}", r.stderr);

    // A schema version mismatch is refused before anything is read.
    let other = work.path("other-version");
    std::fs::create_dir_all(&other).unwrap();
    for (name, bytes) in &exported {
        std::fs::write(format!("{other}/{name}"), bytes).unwrap();
    }
    let versions = manifest.lines().find(|l| l.starts_with("schema_versions\t")).unwrap();
    std::fs::write(format!("{other}/manifest.tsv"), manifest.replace(versions, "schema_versions\t1,2,3"))
        .unwrap();
    let r = backup_sh(&["tenant-import", "--url", &su_url(dst.port), "--in", &other]);
    assert!(!r.ok && r.stderr.contains("schema versions differ"), "{}", r.stderr);

    // The move.
    let import = backup_ok(&["tenant-import", "--url", &su_url(dst.port), "--in", &a_src]);
    backup_ok(&["tenant-export", "--url", &su_url(dst.port), "--tenant", &a.to_string(), "--out", &a_dst]);
    assert_eq!(files(&a_dst), exported, "A exported from the target differs from A exported from the source");
    let ddb = dst.superuser().await;
    let after = snapshot(dst.port).await;
    assert_eq!(tenant_rows(&after), total);
    for t in &tables {
        let (n_b, others): (i64, i64) = {
            let r = ddb
                .query_one(
                    &format!(
                        "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id <> $2) FROM {}",
                        t[1]
                    ),
                    &[&b, &a],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!((n_b, others), (0, 0), "{}: rows of B / of others in the target", t[1]);
    }

    // A second import: A has rows there: refused, nothing changed.
    let r = backup_sh(&["tenant-import", "--url", &su_url(dst.port), "--in", &a_src]);
    assert!(!r.ok && r.stderr.contains("already has rows"), "{}", r.stderr);
    assert_eq!(snapshot(dst.port).await, after, "a refused import changed the target");
    backup_ok(&["tenant-export", "--url", &su_url(dst.port), "--tenant", &a.to_string(), "--out", &a_again]);
    assert_eq!(files(&a_again), exported);

    println!(
        "BACKUP tenant move: {total} rows of A in {} tables ({nonempty} non-empty), export {:.2}s, \
         import {:.2}s, whole test {:.1}s, load average {}",
        tables.len(),
        export.took.as_secs_f64(),
        import.took.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
