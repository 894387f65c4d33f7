use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from a crates.io package so a fresh machine needs no apt step;
    // an explicit PROTOC in the environment still wins.
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/bi/data/v1/job.proto",
        "proto/bi/data/v1/company.proto",
        "proto/bi/data/v1/outreach.proto",
        "proto/bi/data/v1/audit.proto",
        "proto/bi/data/v1/analytics.proto",
        "proto/bi/data/v1/document.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("bi_data_descriptor.bin"))
        // Malformed requests are INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::api::codec::ProtoCodec")
        // Content streams hand their buffers on without a copy.
        .bytes(".bi.data.v1.UploadDocumentContentRequest.data")
        .bytes(".bi.data.v1.DownloadDocumentContentResponse.data")
        .compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    // refinery embeds migrations/ at compile time, and down_steps() embeds
    // migrations/down/: rebuild when either changes (a directory is scanned
    // recursively).
    println!("cargo:rerun-if-changed=migrations");
    fs::write(out.join("down_migrations.rs"), down_steps(Path::new("migrations"))?)?;
    Ok(())
}

/// `V{N}__{name}` of a file name `V{N}__{name}{suffix}` (refinery's naming:
/// digits, then `__`, then word characters).
fn migration_name(file: &str, suffix: &str) -> Option<(u32, String)> {
    let stem = file.strip_prefix('V')?.strip_suffix(suffix)?;
    let (version, name) = stem.split_once("__")?;
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) || !name_ok {
        return None;
    }
    Some((version.parse().ok()?, name.to_owned()))
}

fn file_names(dir: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut names = Vec::new();
    if !dir.exists() {
        return Ok(names);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().into_string().map_err(|n| format!("file name {n:?} is not UTF-8"))?);
        }
    }
    names.sort();
    Ok(names)
}

/// The down step of every migration (docs/migrations.md): the down step of
/// `migrations/V{N}__{name}.sql` is `migrations/down/V{N}__{name}.down.sql`.
/// Returns Rust source: the table `DOWN` of every down step, each embedded
/// with `include_str!`, in version order; or, when an up step has no down
/// step (or a down step no up step, or a file breaks the convention), a
/// `compile_error!` that names every such file, so no binary is built
/// without a way back.
fn down_steps(migrations: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let down_dir = migrations.join("down");
    let mut problems = Vec::new();
    let mut ups = Vec::new();
    for file in file_names(migrations)? {
        if !file.ends_with(".sql") {
            continue;
        }
        match migration_name(&file, ".sql") {
            Some(v) => ups.push(v),
            None => problems.push(format!(
                "migrations/{file}: not a versioned migration V{{N}}__{{name}}.sql (only those can have a down step)"
            )),
        }
    }
    let mut downs = Vec::new();
    for file in file_names(&down_dir)? {
        match migration_name(&file, ".down.sql") {
            Some(v) => downs.push(v),
            None => problems.push(format!("migrations/down/{file}: not named V{{N}}__{{name}}.down.sql")),
        }
    }
    for (version, name) in &ups {
        let same_version: Vec<_> = downs.iter().filter(|(v, _)| v == version).collect();
        match same_version.as_slice() {
            [(_, n)] if n == name => {}
            [] => problems.push(format!(
                "migrations/V{version}__{name}.sql has no down step: add migrations/down/V{version}__{name}.down.sql"
            )),
            _ => problems.push(format!(
                "migrations/V{version}__{name}.sql needs exactly one down step, migrations/down/V{version}__{name}.down.sql; found: {}",
                same_version.iter().map(|(v, n)| format!("V{v}__{n}.down.sql")).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    for (version, name) in &downs {
        if !ups.iter().any(|(v, n)| v == version && n == name) {
            problems.push(format!(
                "migrations/down/V{version}__{name}.down.sql is the down step of no migration (no migrations/V{version}__{name}.sql)"
            ));
        }
    }
    if ups.iter().enumerate().any(|(i, (v, _))| ups[..i].iter().any(|(w, _)| w == v)) {
        problems.push("two migrations share a version".to_owned());
    }
    if !problems.is_empty() {
        return Ok(format!("compile_error!({:?});\n", format!("migrations: {}", problems.join("; "))));
    }
    downs.sort();
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let mut src =
        String::from("/// Generated by build.rs from migrations/down/: every down step, by version.\n");
    src.push_str("const DOWN: &[DownStep] = &[\n");
    for (version, name) in &downs {
        let rel = format!("migrations/down/V{version}__{name}.down.sql");
        let abs = root.join(&rel);
        let abs = abs.to_str().ok_or("the manifest directory is not UTF-8")?;
        src.push_str(&format!(
            "    DownStep {{ version: {version}, name: {name:?}, file: {rel:?}, sql: include_str!({abs:?}) }},\n"
        ));
    }
    src.push_str("];\n");
    Ok(src)
}
