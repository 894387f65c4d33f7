use std::{env, path::PathBuf};

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
    // refinery embeds migrations/ at compile time: rebuild when it changes.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
