//! Schema migrations (refinery, SQL files in `migrations/`), applied under a
//! PostgreSQL advisory lock so replicas starting together apply them once.
//!
//! Every migration has a down step, `migrations/down/V{N}__{name}.down.sql`,
//! embedded at build time (build.rs writes the table [`DOWN`] and refuses to
//! build when an up step has no down step or the other way round).
//! [`migrate_to`] goes forward with refinery's target, or back by running
//! the down steps newest first, each in its own transaction with the
//! deletion of its row of `refinery_schema_history` (docs/migrations.md).

use std::{fmt, time::Duration};

use refinery::{Migration, Target};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::error::{Error, FieldViolation};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The down step of migration `version`: the SQL that undoes it.
struct DownStep {
    version: i32,
    name: &'static str,
    /// Relative to the repository, e.g. `migrations/down/V1__foundation.down.sql`.
    file: &'static str,
    sql: &'static str,
}

// `const DOWN: &[DownStep]`, one entry per file of migrations/down/, by version.
include!(concat!(env!("OUT_DIR"), "/down_migrations.rs"));

/// Arbitrary constant: the advisory lock key of migrations.
const LOCK_KEY: i64 = 0x6269_6461_7461; // "bidata"

/// Session-level advisory lock (and its release) on [`LOCK_KEY`].
const LOCK: &str = include_str!("sql/migrate_lock.sql").trim_ascii_end();
const UNLOCK: &str = include_str!("sql/migrate_unlock.sql").trim_ascii_end();
/// The newest version in refinery's history table.
const APPLIED_VERSION: &str = include_str!("sql/migrate_applied_version.sql").trim_ascii_end();
/// Whether refinery's history table exists (it does once refinery ran).
const HISTORY_EXISTS: &str = include_str!("sql/migrate_history_exists.sql").trim_ascii_end();
/// Forgets one applied version: run with its down step, in its transaction.
const FORGET_VERSION: &str = include_str!("sql/migrate_forget_version.sql").trim_ascii_end();

/// The newest migration version built into this binary.
pub fn latest_version() -> i64 {
    embedded::migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// The migrations built into this binary, by version.
fn known_migrations() -> Vec<Migration> {
    let mut known = embedded::migrations::runner().get_migrations().clone();
    known.sort();
    known
}

/// Connects with the migration URL (see [`super::connect_owner`]).
async fn connect(url: &str, connect_timeout: Duration) -> Result<(Client, JoinHandle<()>), Error> {
    super::connect_owner(url, connect_timeout, "bi-data migrate", "migrate").await.inspect_err(|e| {
        tracing::error!(error = %e, "cannot connect to apply migrations");
    })
}

/// Applies pending migrations; returns how many were applied.
pub async fn run(url: &str, connect_timeout: Duration) -> Result<usize, Error> {
    let (mut client, conn_task) = connect(url, connect_timeout).await?;
    client.execute(LOCK, &[&LOCK_KEY]).await.map_err(super::db_error)?;
    let result = embedded::migrations::runner().set_abort_divergent(true).run_async(&mut client).await;
    let _ = client.execute(UNLOCK, &[&LOCK_KEY]).await;
    drop(client);
    conn_task.abort();
    let report = result.map_err(|e| {
        tracing::error!(error = %e, "migration failed");
        Error::Internal(format!("migration failed: {e}"))
    })?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "applied migration");
    }
    Ok(report.applied_migrations().len())
}

/// The newest applied version, read through the service's pool (unnamed:
/// one request, as a transaction-mode pooler needs).
pub async fn applied_version(store: &super::Store) -> Result<i64, Error> {
    let client = store.primary().get().await.map_err(super::pool_error)?;
    let row = client.query_typed_one(APPLIED_VERSION, &[]).await.map_err(super::db_error)?;
    Ok(row.get(0))
}

/// Whether a step applies a migration or reverts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// One step of a [`Plan`]: migration `version` applied or reverted.
#[derive(Clone, Debug)]
pub struct Step {
    pub version: i32,
    pub name: String,
    pub direction: Direction,
    /// The file the SQL comes from, relative to the repository.
    pub file: String,
    /// The up migration's SQL, or its down step's.
    pub sql: String,
}

/// What [`migrate_to`] did or, with `dry_run`, would do: the steps from
/// version `from` (the newest applied, 0 for none) to `to`, in order.
#[derive(Clone, Debug)]
pub struct Plan {
    pub from: i32,
    pub to: i32,
    pub steps: Vec<Step>,
    pub dry_run: bool,
}

impl Plan {
    /// The SQL of the plan in the order it runs: a first comment line (from,
    /// to, how many steps), then every step preceded by a header line
    /// `-- ==== V{N}__{name} up|down ({file}) ====` and followed by its bookkeeping (a
    /// down step deletes its version from `refinery_schema_history` in the
    /// same transaction; refinery records an up step).
    pub fn script(&self) -> String {
        let mut out = format!(
            "-- bi-data migrate: schema at version {}, target version {}: {} step(s){}\n",
            self.from,
            self.to,
            self.steps.len(),
            if self.dry_run { "; dry run, nothing is applied" } else { "" }
        );
        for s in &self.steps {
            out.push_str(&format!(
                "\n-- ==== V{}__{} {} ({}) ====\n",
                s.version, s.name, s.direction, s.file
            ));
            out.push_str(&s.sql);
            if !s.sql.ends_with('\n') {
                out.push('\n');
            }
            match s.direction {
                Direction::Down => {
                    out.push_str(&FORGET_VERSION.replace("$1", &s.version.to_string()));
                    out.push_str(";\n");
                }
                Direction::Up => out.push_str(&format!(
                    "-- (refinery records version {} in refinery_schema_history)\n",
                    s.version
                )),
            }
        }
        out
    }
}

/// Migrates forward or back to version `to` (the newest built in when
/// `None`; 0 reverts everything), under the same advisory lock as [`run`].
/// Forward is refinery with a target; back runs the down steps of the
/// applied versions above `to`, newest first, each in one transaction with
/// the deletion of its history row. A history this binary does not know
/// (a version it lacks, a name or checksum that differs, a gap) is refused
/// before anything runs. With `dry_run` nothing is applied (not even
/// refinery's history table is created): the returned plan says what would
/// run ([`Plan::script`]).
pub async fn migrate_to(
    url: &str,
    connect_timeout: Duration,
    to: Option<i32>,
    dry_run: bool,
) -> Result<Plan, Error> {
    let (mut client, conn_task) = connect(url, connect_timeout).await?;
    client.execute(LOCK, &[&LOCK_KEY]).await.map_err(super::db_error)?;
    let result = migrate_locked(&mut client, to, dry_run).await;
    let _ = client.execute(UNLOCK, &[&LOCK_KEY]).await;
    drop(client);
    conn_task.abort();
    result
}

async fn migrate_locked(client: &mut Client, to: Option<i32>, dry_run: bool) -> Result<Plan, Error> {
    let known = known_migrations();
    let latest = known.last().map_or(0, Migration::version);
    let to = to.unwrap_or(latest);
    if to != 0 && !known.iter().any(|m| m.version() == to) {
        let versions: Vec<String> = known.iter().map(|m| m.version().to_string()).collect();
        return Err(Error::InvalidArgument(vec![FieldViolation::new(
            "--to",
            format!(
                "this binary has no migration V{to}: give 0 (revert everything) or one of {}",
                versions.join(", ")
            ),
        )]));
    }
    let applied = applied_migrations(client).await?;
    check_history(&known, &applied)?;
    let from = applied.last().map_or(0, Migration::version);
    let steps = if to >= from { up_steps(&known, from, to) } else { down_steps(&applied, to)? };
    let plan = Plan { from, to, steps, dry_run };
    if dry_run || plan.steps.is_empty() {
        return Ok(plan);
    }
    if to > from {
        let report = embedded::migrations::runner()
            .set_abort_divergent(true)
            .set_target(Target::Version(to))
            .run_async(client)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "migration failed");
                Error::Internal(format!("migration failed: {e}"))
            })?;
        for m in report.applied_migrations() {
            tracing::info!(version = m.version(), name = m.name(), "applied migration");
        }
    } else {
        for step in &plan.steps {
            revert(client, step).await?;
        }
    }
    Ok(plan)
}

/// The applied migrations, by version; none when refinery never ran here.
async fn applied_migrations(client: &mut Client) -> Result<Vec<Migration>, Error> {
    let exists: bool =
        client.query_one(HISTORY_EXISTS, &[]).await.map_err(pg_failure("reading the history"))?.get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let mut applied = embedded::migrations::runner()
        .get_applied_migrations_async(client)
        .await
        .map_err(|e| Error::Internal(format!("cannot read refinery_schema_history: {e}")))?;
    applied.sort();
    Ok(applied)
}

/// Refuses a history that is not a prefix of `known` (both by version):
/// a version this binary does not have, one whose name or checksum differs
/// (another build's migration), or a known version missing below an
/// applied one.
fn check_history(known: &[Migration], applied: &[Migration]) -> Result<(), Error> {
    let refuse = |message: String| {
        tracing::error!(%message, "migration history refused");
        Error::FailedPrecondition { reason: "MIGRATION_HISTORY_DIVERGENT", message }
    };
    let latest = known.last().map_or(0, Migration::version);
    for (i, app) in applied.iter().enumerate() {
        let Some(m) = known.iter().find(|m| m.version() == app.version()) else {
            return Err(refuse(format!(
                "refusing to migrate: the database has V{}__{} applied, which this binary does not have \
                 (its newest is V{latest}); migrate with the build that applied it",
                app.version(),
                app.name()
            )));
        };
        if m.name() != app.name() || m.checksum() != app.checksum() {
            return Err(refuse(format!(
                "refusing to migrate: the applied V{}__{} (checksum {}) differs from this binary's V{}__{} \
                 (checksum {}): the database was migrated by another build",
                app.version(),
                app.name(),
                app.checksum(),
                m.version(),
                m.name(),
                m.checksum()
            )));
        }
        if known[i].version() != app.version() {
            return Err(refuse(format!(
                "refusing to migrate: V{}__{} is not applied but the newer V{}__{} is",
                known[i].version(),
                known[i].name(),
                app.version(),
                app.name()
            )));
        }
    }
    Ok(())
}

/// The known migrations above `from` up to `to`, oldest first.
fn up_steps(known: &[Migration], from: i32, to: i32) -> Vec<Step> {
    known
        .iter()
        .filter(|m| m.version() > from && m.version() <= to)
        .map(|m| Step {
            version: m.version(),
            name: m.name().to_owned(),
            direction: Direction::Up,
            file: format!("migrations/V{}__{}.sql", m.version(), m.name()),
            sql: m.sql().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The down steps of the applied migrations above `to`, newest first.
fn down_steps(applied: &[Migration], to: i32) -> Result<Vec<Step>, Error> {
    applied
        .iter()
        .rev()
        .filter(|m| m.version() > to)
        .map(|m| {
            // build.rs guarantees one down step per migration; applied ones
            // were checked against the migrations (check_history).
            let down =
                DOWN.iter().find(|d| d.version == m.version() && d.name == m.name()).ok_or_else(|| {
                    Error::Internal(format!("no down step for V{}__{} in this binary", m.version(), m.name()))
                })?;
            Ok(Step {
                version: down.version,
                name: down.name.to_owned(),
                direction: Direction::Down,
                file: down.file.to_owned(),
                sql: down.sql.to_owned(),
            })
        })
        .collect()
}

/// Runs one down step and forgets its version, in one transaction: a step
/// that fails leaves the schema and the history as they were before it.
async fn revert(client: &mut Client, step: &Step) -> Result<(), Error> {
    let context = format!("reverting V{}__{} ({})", step.version, step.name, step.file);
    let failed = pg_failure(&context);
    let tx = client.transaction().await.map_err(&failed)?;
    tx.batch_execute(&step.sql).await.map_err(&failed)?;
    let forgotten = tx.execute(FORGET_VERSION, &[&step.version]).await.map_err(&failed)?;
    if forgotten != 1 {
        return Err(Error::Internal(format!("{context}: its history row was not found (rolled back)")));
    }
    tx.commit().await.map_err(&failed)?;
    tracing::info!(version = step.version, name = %step.name, "reverted migration");
    Ok(())
}

/// A PostgreSQL error of a migration step, with PostgreSQL's own message
/// (an operator runs these, not a caller of the API).
fn pg_failure(context: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| {
        let detail = match e.as_db_error() {
            Some(d) => {
                let mut text = format!("{}: {} (SQLSTATE {})", d.severity(), d.message(), d.code().code());
                for extra in [d.detail(), d.hint()].into_iter().flatten() {
                    text.push_str(&format!("; {}", extra.replace('\n', "; ")));
                }
                text
            }
            None => e.to_string(),
        };
        tracing::error!(error = %detail, "{context} failed");
        Error::Internal(format!("{context} failed, rolled back: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every up step has exactly one down step and every down step an up
    /// step (build.rs refuses to build otherwise; this also checks that it
    /// found the same migrations as refinery), and each does something.
    #[test]
    fn every_migration_has_exactly_one_down_step() {
        let ups: Vec<(i32, String)> =
            known_migrations().iter().map(|m| (m.version(), m.name().to_owned())).collect();
        let downs: Vec<(i32, String)> = DOWN.iter().map(|d| (d.version, d.name.to_owned())).collect();
        assert!(!ups.is_empty());
        assert_eq!(ups, downs, "up steps (left) and down steps (right) differ");
        for d in DOWN {
            assert_eq!(d.file, format!("migrations/down/V{}__{}.down.sql", d.version, d.name));
            let statements =
                d.sql.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("--")).count();
            assert!(statements > 0, "{} has no statement", d.file);
        }
    }

    fn migration(version: i32, name: &str, sql: &str) -> Migration {
        Migration::unapplied(&format!("V{version}__{name}"), sql).unwrap()
    }

    #[test]
    fn history_must_be_a_prefix_of_the_known_migrations() {
        let known =
            vec![migration(1, "a", "SELECT 1"), migration(2, "b", "SELECT 2"), migration(3, "c", "SELECT 3")];
        assert!(check_history(&known, &[]).is_ok());
        assert!(check_history(&known, &known[..2]).is_ok());
        assert!(check_history(&known, &known).is_ok());
        let message = |applied: &[Migration]| match check_history(&known, applied) {
            Err(Error::FailedPrecondition { reason: "MIGRATION_HISTORY_DIVERGENT", message }) => message,
            other => panic!("{other:?}"),
        };
        let unknown = message(&[known[0].clone(), known[1].clone(), known[2].clone(), migration(4, "d", "")]);
        assert!(unknown.contains("V4__d") && unknown.contains("does not have"), "{unknown}");
        let other_sql = message(&[known[0].clone(), migration(2, "b", "SELECT 22")]);
        assert!(other_sql.contains("V2__b") && other_sql.contains("differs"), "{other_sql}");
        let other_name = message(&[migration(1, "z", "SELECT 1")]);
        assert!(other_name.contains("V1__z") && other_name.contains("V1__a"), "{other_name}");
        let gap = message(&[known[0].clone(), known[2].clone()]);
        assert!(gap.contains("V2__b is not applied") && gap.contains("V3__c"), "{gap}");
    }

    #[test]
    fn down_steps_run_newest_first_to_the_target() {
        let applied = known_migrations();
        let steps = down_steps(&applied, 0).unwrap();
        let versions: Vec<i32> = steps.iter().map(|s| s.version).collect();
        let mut expected: Vec<i32> = applied.iter().map(Migration::version).collect();
        expected.reverse();
        assert_eq!(versions, expected);
        assert!(steps.iter().all(|s| s.direction == Direction::Down));
        let latest = applied.last().unwrap().version();
        assert_eq!(down_steps(&applied, latest).unwrap().len(), 0);
        assert_eq!(
            down_steps(&applied, latest - 1).unwrap().iter().map(|s| s.version).collect::<Vec<_>>(),
            [latest]
        );
    }
}
