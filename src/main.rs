use std::process::ExitCode;

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
    telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Migrate(db)) => {
                let n = store::migrate::run(
                    &db.migration_url().0,
                    std::time::Duration::from_millis(db.connect_timeout_ms),
                )
                .await?;
                println!("applied {n} migration(s); schema at version {}", store::migrate::latest_version());
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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), bi_data::error::Error> {
    let running = app::start(args).await?;
    shutdown_signal().await;
    tracing::info!("signal received");
    running.shutdown().await
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
