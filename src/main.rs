use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use bi_data::{
    app,
    auth::{TokenKeys, parse_roles},
    config::{Cli, Command, ServeArgs},
    demo, store, telemetry,
};
use clap::Parser;

/// mimalloc instead of glibc malloc: a ListJobs page allocates thousands of
/// small strings and maps on one thread and frees them on another, and
/// glibc's malloc/free took ~30 % of the server's CPU there (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, None | Some(Command::Serve(_)));
    // Inside the runtime: the OTLP exporter's channel lives on it.
    let telemetry = runtime.block_on(async { telemetry::init(serving) });
    let result = runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve, telemetry).await,
            Some(Command::Serve(args)) => serve(args, telemetry).await,
            Some(Command::Migrate(m)) if m.to.is_none() && !m.dry_run => {
                let db = m.db;
                let url = db.direct_migration_url().map_err(bi_data::error::Error::Startup)?;
                let n = store::migrate::run(&url.0, std::time::Duration::from_millis(db.connect_timeout_ms))
                    .await?;
                println!("applied {n} migration(s); schema at version {}", store::migrate::latest_version());
                Ok(())
            }
            Some(Command::Migrate(m)) => {
                let timeout = Duration::from_millis(m.db.connect_timeout_ms);
                let url = m.db.direct_migration_url().map_err(bi_data::error::Error::Startup)?;
                let plan = store::migrate::migrate_to(&url.0, timeout, m.to, m.dry_run).await?;
                if plan.dry_run {
                    print!("{}", plan.script());
                } else if plan.steps.is_empty() {
                    println!("schema already at version {}; nothing to do", plan.to);
                } else {
                    let n = plan.steps.len();
                    let done = match plan.steps.first().map(|s| s.direction) {
                        Some(store::migrate::Direction::Down) => "reverted",
                        _ => "applied",
                    };
                    println!("{done} {n} migration(s); schema at version {}", plan.to);
                }
                Ok(())
            }
            Some(Command::Token(t)) => {
                let secret = t.auth.jwt_secret.ok_or_else(|| {
                    bi_data::error::Error::Internal(
                        "a JWT secret is required (--jwt-secret / JWT_SECRET)".into(),
                    )
                })?;
                let roles = parse_roles(&t.roles).map_err(bi_data::error::Error::Internal)?;
                println!("{}", TokenKeys::new(secret.expose()).mint(t.tenant, &roles, &t.subject, t.ttl));
                Ok(())
            }
            Some(Command::DemoData(d)) => demo::run(d).await,
        }
    });
    // A flush that timed out may still hold a blocking thread: do not wait.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until SIGTERM/SIGINT, then drains and flushes traces, all within
/// the drain timeout (the trace flush gets what the drain left, between
/// 500 ms and 5 s).
async fn serve(args: ServeArgs, telemetry: telemetry::Telemetry) -> Result<(), bi_data::error::Error> {
    let drain = args.drain_timeout();
    let (url, connect) = (args.db.database_url.0.clone(), Duration::from_millis(args.db.connect_timeout_ms));
    let startup = Duration::from_millis(args.startup_timeout_ms);
    let running = match app::start(args).await {
        Ok(r) => r,
        Err(e) => {
            telemetry.shutdown(Duration::from_millis(500)).await;
            return Err(e);
        }
    };
    // At start, a database the service cannot use is a reason to exit (one
    // line: why, what to do); later, an outage is only NOT_SERVING.
    let usable = async {
        let since = Instant::now();
        loop {
            match store::check_connection(&url, connect).await {
                Ok(()) => return Ok(()),
                Err(e) if !startup.is_zero() && since.elapsed() >= startup => return Err(e),
                Err(e) => tracing::warn!(error = %e, "database not usable yet; waiting"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    // One signal future for the whole life: a SIGTERM during the check is not lost.
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let failed = tokio::select! {
        r = usable => r.err(),
        () = &mut stop => {
            let result = running.shutdown().await;
            telemetry.shutdown(Duration::from_millis(500)).await;
            return result;
        }
    };
    if let Some(e) = failed {
        let _ = running.shutdown().await;
        telemetry.shutdown(Duration::from_millis(500)).await;
        return Err(e);
    }
    stop.await;
    tracing::info!("signal received");
    let deadline = Instant::now() + drain;
    let result = running.shutdown().await;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    telemetry.shutdown(left).await;
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
