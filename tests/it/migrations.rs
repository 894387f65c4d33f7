//! Reversible migrations (docs/migrations.md), proven with the real binary
//! (`bi-data migrate`, `--to N`, `--dry-run`) against a PostgreSQL cluster
//! of each test's own (`PrivatePg`), comparing `pg_dump --schema-only`:
//!
//! - apply all, revert all (`--to 0`), apply all: the first and last dumps
//!   are identical, and the reverted database dumps like the fresh one;
//! - for every version k, `--to k-1` then `--to k` leaves the dump of
//!   version k-1, then of k, exactly (a down step that undoes too much or
//!   too little shows as a diff);
//! - `--dry-run` prints every step's SQL in order and changes nothing;
//! - two `migrate` processes at once (forward, then back) apply and revert
//!   each version once;
//! - a history this binary does not know is refused before anything runs,
//!   and a down step that fails leaves its migration applied.
//!
//! Nothing here names a version: the migrations are read from the
//! repository, so a new migration and its down step are checked as they land.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Instant,
};

use uuid::Uuid;

use crate::faults::{PrivatePg, load_average};

const PG_DUMP: &str = "/usr/lib/postgresql/15/bin/pg_dump";

/// `(version, name)` of every `migrations/V{N}__{name}.sql`, by version.
fn migrations_on_disk() -> Vec<(i32, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut found: Vec<(i32, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let file = e.unwrap().file_name().into_string().unwrap();
            let stem = file.strip_prefix('V')?.strip_suffix(".sql")?;
            let (version, name) = stem.split_once("__")?;
            Some((version.parse().ok()?, name.to_owned()))
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no migrations in {}", dir.display());
    found
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// `bi-data migrate <args>` against the cluster's database, as the owner role.
fn migrate(pg: &PrivatePg, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bi-data"))
        .arg("migrate")
        .args(args)
        .args(["--database-url", &pg.url()])
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// As [`migrate`], asserting exit 0; its stdout.
fn migrate_ok(pg: &PrivatePg, args: &[&str]) -> String {
    let out = migrate(pg, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "bi-data migrate {args:?}: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout.into_owned()
}

/// As [`migrate`], asserting failure; its stderr.
fn migrate_refused(pg: &PrivatePg, args: &[&str]) -> String {
    let out = migrate(pg, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "bi-data migrate {args:?} succeeded: stdout: {stdout}\nstderr: {stderr}");
    stderr.into_owned()
}

/// `pg_dump --schema-only` of the cluster's database, without the lines
/// that differ on every run (`\restrict <random key>`). Without refinery's
/// history table when `history` is false (a database that never migrated
/// has none; reverting everything keeps it, empty).
fn dump(pg: &PrivatePg, history: bool) -> String {
    let port = pg.port.to_string();
    let mut cmd = Command::new(PG_DUMP);
    cmd.args(["--schema-only", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "bi_data"]);
    if !history {
        cmd.arg("--exclude-table=public.refinery_schema_history");
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Asserts two dumps are identical; on failure prints `diff -u` of them.
fn assert_same_schema(what: &str, expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    let dir = std::env::temp_dir();
    let id = Uuid::new_v4().simple();
    let (a, b) = (
        dir.join(format!("bi-data-dump-{id}-expected.sql")),
        dir.join(format!("bi-data-dump-{id}-actual.sql")),
    );
    std::fs::write(&a, expected).unwrap();
    std::fs::write(&b, actual).unwrap();
    let diff = Command::new("diff").arg("-u").arg(&a).arg(&b).output().unwrap();
    let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    panic!(
        "{what}: the schema differs (diff -u expected actual):\n{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

/// refinery's history: `(version, name, checksum)` by version; empty when
/// the table does not exist.
async fn history(pg: &PrivatePg) -> Vec<(i32, String, String)> {
    let db = pg.superuser().await;
    let exists: bool =
        db.query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[]).await.unwrap().get(0);
    if !exists {
        return Vec::new();
    }
    db.query("SELECT version, name, checksum FROM refinery_schema_history ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn history_versions(pg: &PrivatePg) -> Vec<(i32, String)> {
    history(pg).await.into_iter().map(|(v, n, _)| (v, n)).collect()
}

#[tokio::test]
async fn apply_all_revert_all_apply_all_gives_the_same_schema() {
    let pg = PrivatePg::start().await;
    let all = migrations_on_disk();
    let started = Instant::now();
    let pristine = dump(&pg, false);

    let out = migrate_ok(&pg, &[]);
    assert!(out.contains(&format!("applied {} migration(s)", all.len())), "{out}");
    assert_eq!(history_versions(&pg).await, all);
    let first = dump(&pg, true);
    assert!(first.contains("CREATE TABLE public.jobs ("), "the dump holds no schema:\n{first}");

    let out = migrate_ok(&pg, &["--to", "0"]);
    assert_eq!(out.trim(), format!("reverted {} migration(s); schema at version 0", all.len()));
    assert_eq!(history(&pg).await, []);
    // Nothing of ours remains: the database dumps as before any migration
    // (refinery's history table stays, empty, and without V1's grant).
    assert_same_schema("after --to 0, compared with the fresh database", &pristine, &dump(&pg, false));
    let db = pg.superuser().await;
    let granted: bool = db
        .query_one("SELECT has_table_privilege('bi_data_app', 'refinery_schema_history', 'SELECT')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!granted, "V1's grant on the history table was not revoked");

    let out = migrate_ok(&pg, &[]);
    assert!(out.contains(&format!("applied {} migration(s)", all.len())), "{out}");
    assert_eq!(history_versions(&pg).await, all);
    assert_same_schema(
        "applied, reverted and applied again, compared with the first",
        &first,
        &dump(&pg, true),
    );
    println!(
        "MIGRATIONS up/down/up: {} migrations, dumps of {} lines identical, {:?}; load_avg={}",
        all.len(),
        first.lines().count(),
        started.elapsed(),
        load_average()
    );
}

#[tokio::test]
async fn every_down_step_undoes_exactly_its_up_step() {
    let pg = PrivatePg::start().await;
    let all = migrations_on_disk();
    let started = Instant::now();
    let pristine = dump(&pg, false);
    // Version 0 with refinery's history table, so every state below dumps it.
    migrate_ok(&pg, &["--to", &all[0].0.to_string()]);
    migrate_ok(&pg, &["--to", "0"]);
    assert_same_schema("V1 up and down", &pristine, &dump(&pg, false));
    let mut previous = dump(&pg, true);
    let mut below = 0;
    for (version, name) in &all {
        let (k, k_1) = (version.to_string(), below.to_string());
        let out = migrate_ok(&pg, &["--to", &k]);
        assert_eq!(out.trim(), format!("applied 1 migration(s); schema at version {k}"));
        let at_k = dump(&pg, true);
        assert_ne!(at_k, previous, "V{k}__{name} changed nothing the dump shows");

        let out = migrate_ok(&pg, &["--to", &k_1]);
        assert_eq!(out.trim(), format!("reverted 1 migration(s); schema at version {k_1}"));
        assert_same_schema(
            &format!("V{k}__{name} up then down, compared with V{k_1}"),
            &previous,
            &dump(&pg, true),
        );
        assert_eq!(
            history_versions(&pg).await,
            all.iter().filter(|(v, _)| *v < *version).cloned().collect::<Vec<_>>()
        );

        migrate_ok(&pg, &["--to", &k]);
        assert_same_schema(&format!("V{k}__{name} up, down and up again"), &at_k, &dump(&pg, true));
        previous = at_k;
        below = *version;
    }
    assert_eq!(history_versions(&pg).await, all);
    println!(
        "MIGRATIONS step by step: {} down steps each restore the previous dump, {:?}; load_avg={}",
        all.len(),
        started.elapsed(),
        load_average()
    );
}

/// The positions in `out` of each `(header, body)`, asserting each body
/// follows its header and the pairs come in order.
fn assert_in_order(out: &str, parts: &[(String, String)]) {
    let mut at = 0;
    for (header, body) in parts {
        let h = out[at..]
            .find(header.as_str())
            .unwrap_or_else(|| panic!("missing (or out of order): {header}\n{out}"));
        let after = at + h + header.len();
        assert!(
            out[after..].trim_start_matches('\n').starts_with(body.as_str()),
            "{header} is not followed by its SQL:\n{out}"
        );
        at = after + body.len();
    }
}

#[tokio::test]
async fn dry_run_prints_every_step_and_changes_nothing() {
    let pg = PrivatePg::start().await;
    let all = migrations_on_disk();
    let pristine = dump(&pg, false);

    // Forward on a fresh database: every up file, oldest first; not even
    // refinery's history table is created.
    let out = migrate_ok(&pg, &["--dry-run"]);
    let latest = all.last().unwrap().0;
    assert!(
        out.starts_with(&format!(
            "-- bi-data migrate: schema at version 0, target version {latest}: {} step(s); dry run",
            all.len()
        )),
        "{out}"
    );
    let ups: Vec<(String, String)> = all
        .iter()
        .map(|(v, n)| {
            let file = format!("migrations/V{v}__{n}.sql");
            (format!("-- ==== V{v}__{n} up ({file}) ===="), read(&file))
        })
        .collect();
    assert_in_order(&out, &ups);
    assert_eq!(out.matches("-- ==== ").count(), all.len(), "{out}");
    let db = pg.superuser().await;
    let table: Option<String> =
        db.query_one("SELECT to_regclass('refinery_schema_history')::text", &[]).await.unwrap().get(0);
    assert_eq!(table, None, "a dry run created the history table");
    assert_same_schema("after a forward dry run", &pristine, &dump(&pg, true));

    // Back from the newest: every down file, newest first, each with the
    // deletion of its history row; nothing changes.
    migrate_ok(&pg, &[]);
    let before = (dump(&pg, true), history(&pg).await);
    let out = migrate_ok(&pg, &["--dry-run", "--to", "0"]);
    assert!(
        out.starts_with(&format!(
            "-- bi-data migrate: schema at version {latest}, target version 0: {} step(s); dry run",
            all.len()
        )),
        "{out}"
    );
    let downs: Vec<(String, String)> = all
        .iter()
        .rev()
        .map(|(v, n)| {
            let file = format!("migrations/down/V{v}__{n}.down.sql");
            let mut body = read(&file);
            if !body.ends_with('\n') {
                body.push('\n');
            }
            body.push_str(&format!("DELETE FROM refinery_schema_history WHERE version = {v};\n"));
            (format!("-- ==== V{v}__{n} down ({file}) ===="), body)
        })
        .collect();
    assert_in_order(&out, &downs);
    assert_eq!(out.matches("-- ==== ").count(), all.len(), "{out}");
    assert_same_schema("after --dry-run --to 0", &before.0, &dump(&pg, true));
    assert_eq!(history(&pg).await, before.1, "a dry run changed the history");

    // One step back: only the newest down step.
    let (v, n) = all.last().unwrap();
    let below = all.iter().rev().nth(1).map_or(0, |(v, _)| *v);
    let out = migrate_ok(&pg, &["--dry-run", "--to", &below.to_string()]);
    assert_eq!(out.matches("-- ==== ").count(), 1, "{out}");
    assert!(out.contains(&format!("-- ==== V{v}__{n} down")), "{out}");
    assert_eq!(history(&pg).await, before.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrate_processes_at_once_apply_and_revert_each_version_once() {
    // (tests/it/faults/lifecycle.rs starts two servers together: both
    // serve and the history holds every version once. This runs the
    // migrate command itself, forward and back.)
    let pg = PrivatePg::start().await;
    let all = migrations_on_disk();
    let pristine = dump(&pg, false);
    let together = |args: &'static [&'static str]| {
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_bi-data"))
                .arg("migrate")
                .args(args)
                .args(["--database-url", &pg.url()])
                .env_remove("MIGRATION_DATABASE_URL")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()].map(|o| {
            let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success(),
                "{args:?}: {}: {stdout} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            stdout
        })
    };
    // "applied 8 migration(s); ..." / "reverted 8 ...": 8; "... nothing to do": 0.
    let count = |outs: &[String], verb: &str| -> usize {
        outs.iter()
            .map(|o| match o.strip_prefix(verb) {
                Some(rest) => rest.trim_start().split(' ').next().unwrap().parse::<usize>().unwrap(),
                None if o.contains("nothing to do") => 0,
                None => panic!("{verb}: {o}"),
            })
            .sum()
    };

    let outs = together(&[]);
    assert_eq!(count(&outs, "applied"), all.len(), "{outs:?}");
    let db = pg.superuser().await;
    let per_version: Vec<(i32, i64)> = db
        .query("SELECT version, count(*) FROM refinery_schema_history GROUP BY version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(per_version, all.iter().map(|(v, _)| (*v, 1)).collect::<Vec<_>>());

    let outs = together(&["--to", "0"]);
    // One reverted everything; the other found nothing left to revert.
    assert_eq!(count(&outs, "reverted"), all.len(), "{outs:?}");
    assert_eq!(history(&pg).await, []);
    assert_same_schema("two --to 0 at once", &pristine, &dump(&pg, false));
    let pg_log = pg.log();
    assert!(!pg_log.contains("ERROR"), "PostgreSQL logged errors: {pg_log}");
}

#[tokio::test]
async fn a_history_this_binary_does_not_know_is_refused() {
    let pg = PrivatePg::start().await;
    let all = migrations_on_disk();
    let latest = all.last().unwrap().0;
    migrate_ok(&pg, &[]);
    let schema = dump(&pg, true);
    let applied = history(&pg).await;
    let db = pg.superuser().await;
    let unchanged = async |what: &str| {
        assert_same_schema(what, &schema, &dump(&pg, true));
        assert_eq!(history(&pg).await, applied, "{what}: history changed");
    };

    let err = migrate_refused(&pg, &["--to", &(latest + 1).to_string()]);
    assert!(err.contains(&format!("no migration V{}", latest + 1)), "{err}");
    let err = migrate_refused(&pg, &["--to=-1"]);
    assert!(err.contains("--to"), "{err}");

    // A version of another build: same number, other checksum.
    let (v, name, checksum) = applied[1].clone();
    db.execute("UPDATE refinery_schema_history SET checksum = '1' WHERE version = $1", &[&v]).await.unwrap();
    for args in [&["--to", "0"][..], &["--dry-run", "--to", "0"], &["--to", &latest.to_string()]] {
        let err = migrate_refused(&pg, args);
        assert!(err.contains(&format!("V{v}__{name} (checksum 1) differs")), "{args:?}: {err}");
    }
    // Plain migrate refuses too (refinery's own check).
    let err = migrate_refused(&pg, &[]);
    assert!(err.contains("migration failed"), "{err}");
    db.execute("UPDATE refinery_schema_history SET checksum = $2 WHERE version = $1", &[&v, &checksum])
        .await
        .unwrap();
    unchanged("after a divergent checksum").await;

    // A version this binary does not have (a newer build applied it).
    let future = latest + 1;
    db.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES ($1, 'from_a_newer_build', '2026-01-01T00:00:00Z', '7')",
        &[&future],
    )
    .await
    .unwrap();
    let err = migrate_refused(&pg, &["--to", "0"]);
    assert!(
        err.contains(&format!("V{future}__from_a_newer_build applied, which this binary does not have")),
        "{err}"
    );
    db.execute("DELETE FROM refinery_schema_history WHERE version = $1", &[&future]).await.unwrap();

    // A gap: a known version missing below an applied one.
    let gap = &applied[0];
    db.execute("DELETE FROM refinery_schema_history WHERE version = $1", &[&gap.0]).await.unwrap();
    let err = migrate_refused(&pg, &["--to", "0"]);
    assert!(err.contains(&format!("V{}__{} is not applied", gap.0, gap.1)), "{err}");
    db.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES ($1, $2, '2026-01-01T00:00:00Z', $3)",
        &[&gap.0, &gap.1, &gap.2],
    )
    .await
    .unwrap();
    let mut applied_now = history(&pg).await;
    applied_now.sort();
    assert_eq!(applied_now, applied);
    unchanged("after the refusals").await;

    // A down step that fails (an object it does not know depends on a
    // table it drops: no CASCADE) rolls back whole: its version stays
    // applied with everything it had (the REVOKE before the DROP too).
    db.batch_execute("CREATE VIEW public.someone_elses_view AS SELECT id FROM jobs").await.unwrap();
    let err = migrate_refused(&pg, &["--to", "0"]);
    let (v1, n1) = &all[0];
    assert!(
        err.contains(&format!("reverting V{v1}__{n1}"))
            && err.contains("someone_elses_view depends on table jobs"),
        "{err}"
    );
    assert_eq!(history_versions(&pg).await, [all[0].clone()]);
    let granted: bool = db
        .query_one("SELECT has_table_privilege('bi_data_app', 'refinery_schema_history', 'SELECT')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(granted, "the failed down step was not rolled back");
    db.batch_execute("DROP VIEW public.someone_elses_view").await.unwrap();
    migrate_ok(&pg, &["--to", "0"]);
    assert_eq!(history(&pg).await, []);
}
