//! The Python client package (`clients/python`): built as a wheel from
//! `proto/` by `scripts/build-python-client.sh`, installed into a fresh
//! virtualenv (the wheel plus its runtime dependencies, at the versions
//! `scripts/requirements-tools.txt` pins), and its own tests
//! (`clients/python/tests`) run against a live server. `client_python()` is
//! that venv's interpreter, also used to run `examples/python/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The python of a fresh venv holding only `bi_data_client` and what it
/// needs; built once per test run, on first use (blocking: call it from
/// `spawn_blocking`).
pub fn client_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| install_client().unwrap_or_else(|e| panic!("installing the Python client: {e}")))
}

fn install_client() -> Result<PathBuf, String> {
    let t0 = Instant::now();
    // The tools venv (scripts/dev-env.sh) builds the wheel and lends its pip.
    let tools = std::env::var("PYTHON").unwrap_or_else(|_| format!("{ROOT}/.tools/venv/bin/python"));
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    remove_stale(base);
    let dir = base.join(format!("python-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (wheels, venv) = (dir.join("wheels"), dir.join("venv"));
    run(Command::new("bash")
        .arg(format!("{ROOT}/scripts/build-python-client.sh"))
        .arg(&wheels)
        .env("PYTHON", &tools))?;
    run(Command::new(&tools).args(["-m", "venv", "--without-pip"]).arg(&venv))?;
    let python = venv.join("bin/python");
    run(Command::new(&tools)
        .args(["-m", "pip", "--python"])
        .arg(&python)
        .args(["install", "-q", "--disable-pip-version-check", "--find-links"])
        .arg(&wheels)
        .args(["-c", &format!("{ROOT}/scripts/requirements-tools.txt"), "bi-data-client"]))?;
    eprintln!("python client: wheel built and installed into {} in {:?}", venv.display(), t0.elapsed());
    Ok(python)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Err(format!("{cmd:?} failed ({}):\n{stdout}\n{stderr}", out.status))
}

/// Venvs left by earlier runs (one per test process, ~50 MB each).
fn remove_stale(base: &Path) {
    let old = |p: &Path| {
        let age = p
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        age.is_some_and(|a| a > Duration::from_secs(3600))
    };
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with("python-client-") && old(&path) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[tokio::test]
async fn python_client_package_passes_its_tests_against_a_server() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let (addr, token) = (app.addr.to_string(), t.writer.clone());
    let (out, took) = tokio::task::spawn_blocking(move || {
        let python = client_python();
        let t0 = Instant::now();
        let out = Command::new(python)
            .args(["-m", "unittest", "discover", "-v", "-s", &format!("{ROOT}/clients/python/tests")])
            .env("BI_DATA_ADDR", addr)
            .env("BI_DATA_TOKEN", token)
            .env_remove("PYTHONPATH")
            .output()
            .expect("the client venv's python runs");
        (out, t0.elapsed())
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python client's tests failed ({}):\n{stdout}\n{stderr}", out.status);
    // unittest reports on stderr: "Ran N tests in ...s" then "OK".
    let ran: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no 'Ran N tests' line:\n{stderr}"));
    assert!(ran >= 8, "only {ran} Python tests ran:\n{stderr}");
    eprintln!("python client: {ran} tests passed in {took:?}");
    app.stop().await;
}
