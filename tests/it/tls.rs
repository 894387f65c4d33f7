//! TLS everywhere it crosses a network (issue 15, part 3; docs/tls.md):
//! a throwaway CA and certificates made here with rcgen; the real server
//! binary serving TLS (and mTLS), a private PostgreSQL taking only
//! `hostssl`, and a TLS-only Redis. Each refusal case is asserted: a
//! plaintext client, a client trusting another CA, a certificate naming
//! another host, a missing or foreign client certificate.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bi_data::{
    app,
    pb::{CreateJobRequest, GetJobRequest, job_service_client::JobServiceClient},
    store::{check_connection, tls::connector_for},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::{
    common::*,
    faults::{PrivatePg, Process, free_port},
    observability::{key, scrape},
};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn new_ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate (PEM) and its key (PKCS#8 PEM) for `names`, signed by `ca`.
fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut p = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The files of one test: a CA, another CA, a server certificate for
/// 127.0.0.1/localhost, one naming another host, client certificates of
/// both CAs. Removed on drop.
struct Pki {
    dir: PathBuf,
    server: (String, String),
    wrong_name: (String, String),
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("bi-data-tls-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = new_ca("bi-data test CA");
        let other = new_ca("another CA");
        let server = leaf(&ca, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let wrong_name = leaf(&ca, &["db.elsewhere.test"], ExtendedKeyUsagePurpose::ServerAuth);
        let client = leaf(&ca, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let foreign = leaf(&other, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let files = [
            ("ca.pem", ca.pem()),
            ("wrong-ca.pem", other.pem()),
            ("server.pem", server.0.clone()),
            ("server.key", server.1.clone()),
            ("client.pem", client.0),
            ("client.key", client.1),
            ("foreign.pem", foreign.0),
            ("foreign.key", foreign.1),
        ];
        for (name, pem) in files {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Pki { dir, server, wrong_name }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An error and every source under it, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut s = e.source();
    while let Some(inner) = s {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        s = inner.source();
    }
    out
}

/// A TLS channel to `addr` trusting `ca` (by the name `localhost`), with a
/// client certificate when given. Errors as text (connect or handshake).
async fn tls_channel(addr: &str, ca: &str, client: Option<(String, String)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| chain(&e))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| chain(&e))
}

async fn health_of(channel: &Channel) -> Result<i32, String> {
    let mut req = tonic::Request::new(HealthCheckRequest { service: String::new() });
    req.set_timeout(Duration::from_secs(3));
    HealthClient::new(channel.clone()).check(req).await.map(|r| r.into_inner().status).map_err(|s| {
        format!(
            "{:?} {}: {}",
            s.code(),
            s.message(),
            std::error::Error::source(&s).map(chain).unwrap_or_default()
        )
    })
}

/// Connects and asks health until SERVING (the server is migrating).
async fn serving_tls(addr: &str, ca: &str, client: Option<(String, String)>, server: &Process) -> Channel {
    let started = Instant::now();
    loop {
        let last = match tls_channel(addr, ca, client.clone()).await {
            Ok(ch) => match health_of(&ch).await {
                Ok(s) if s == ServingStatus::Serving as i32 => return ch,
                other => format!("{other:?}"),
            },
            Err(e) => e,
        };
        assert!(started.elapsed() < Duration::from_secs(45), "no TLS SERVING: {last}\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CreateJob then GetJob through `channel`: the record comes back.
async fn create_and_get(channel: &Channel) {
    let t = Tenant::new();
    let mut jobs = JobServiceClient::new(channel.clone());
    let created = jobs
        .create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(job("over tls")), request_id: String::new() },
        ))
        .await
        .expect("CreateJob over TLS")
        .into_inner();
    let got = jobs
        .get_job(authed(&t.reader, GetJobRequest { id: created.id.clone() }))
        .await
        .expect("GetJob")
        .into_inner();
    assert_eq!(got, created);
    assert_eq!(got.title, "over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_refuses_plaintext_and_a_client_trusting_another_ca() {
    let pki = Pki::new();
    let health_addr = format!("127.0.0.1:{}", free_port());
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server = Process::spawn(
        &database_url(),
        &["--tls-cert", &cert, "--tls-key", &key, "--health-listen", &health_addr],
    );
    let ch = serving_tls(&server.addr, &pki.read("ca.pem"), None, &server).await;
    create_and_get(&ch).await;

    // Plaintext HTTP/2 to the TLS port: no answer.
    let plain = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect_lazy();
    let e = health_of(&plain).await.expect_err("a plaintext client is refused");
    eprintln!("TLS refused: plaintext client: {e}");
    assert!(!e.is_empty());
    // A client trusting another CA: the handshake fails on the certificate.
    let e = match tls_channel(&server.addr, &pki.read("wrong-ca.pem"), None).await {
        Ok(ch) => health_of(&ch).await.expect_err("a client trusting another CA is refused"),
        Err(e) => e,
    };
    eprintln!("TLS refused: client trusting another CA: {e}");
    assert!(e.contains("UnknownIssuer") || e.contains("certificate"), "{e}");
    // The server still serves after the refused handshakes.
    create_and_get(&ch).await;

    // The plaintext health-only listener (probes): health, and nothing else.
    let probe = Channel::from_shared(format!("http://{health_addr}")).unwrap().connect_lazy();
    assert_eq!(health_of(&probe).await, Ok(ServingStatus::Serving as i32));
    let t = Tenant::new();
    let e = JobServiceClient::new(probe)
        .get_job(authed(&t.reader, GetJobRequest { id: Uuid::new_v4().to_string() }))
        .await
        .expect_err("no data service on the health listener");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_of_the_client_ca() {
    let pki = Pki::new();
    let (cert, key, ca) = (pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"));
    let server =
        Process::spawn(&database_url(), &["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca]);
    let good = Some((pki.read("client.pem"), pki.read("client.key")));
    let ch = serving_tls(&server.addr, &pki.read("ca.pem"), good, &server).await;
    create_and_get(&ch).await;

    // Without a certificate, and with one of another CA: refused (TLS 1.3
    // reports the refusal after the handshake, on the first call).
    let foreign = Some((pki.read("foreign.pem"), pki.read("foreign.key")));
    for (what, client) in [("no client certificate", None), ("a certificate of another CA", foreign)] {
        let e = match tls_channel(&server.addr, &pki.read("ca.pem"), client).await {
            Ok(ch) => health_of(&ch).await.expect_err(what),
            Err(e) => e,
        };
        eprintln!("TLS refused: mTLS, {what}: {e}");
        assert!(!e.is_empty(), "{what}");
        assert!(!e.contains("Serving"), "{what}: {e}");
    }
    create_and_get(&ch).await;
}

/// A superuser connection over TLS (the cluster takes nothing else).
async fn superuser_tls(pg: &PrivatePg, ca: &str) -> tokio_postgres::Client {
    let url =
        format!("postgres://postgres@127.0.0.1:{}/bi_data?sslmode=verify-full&sslrootcert={ca}", pg.port);
    let (cfg, tls) = connector_for(&url).unwrap();
    let (client, conn) = cfg.connect(tls).await.expect("superuser over TLS");
    tokio::spawn(conn);
    client
}

fn with_tls(pg: &PrivatePg, params: &str) -> String {
    format!("{}?{params}", pg.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_connects_and_plaintext_wrong_ca_and_wrong_name_are_refused() {
    let pki = Pki::new();
    let pg = PrivatePg::start_ssl(&pki.server.0, &pki.server.1).await;
    let (ca, wrong_ca) = (pki.path("ca.pem"), pki.path("wrong-ca.pem"));
    let timeout = Duration::from_secs(3);
    let full = with_tls(&pg, &format!("sslmode=verify-full&sslrootcert={ca}"));

    // The reload that turned ssl on is asynchronous: wait for it.
    let started = Instant::now();
    while let Err(e) = check_connection(&full, timeout).await {
        assert!(started.elapsed() < Duration::from_secs(10), "verify-full never connected: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The service: migrations, the pool, a write and a read, all over TLS.
    let app = TestApp::spawn_on(&full, &[]).await;
    let t = Tenant::new();
    let created = app.create::<bi_data::pb::Job>(&t, job("pg over tls")).await;
    assert_eq!(app.get::<bi_data::pb::Job>(&t, &created.id).await, created);
    let su = superuser_tls(&pg, &ca).await;
    let rows = su
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'bi-data%'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the service holds connections");
    assert!(rows.iter().all(|r| r.get::<_, bool>(0)), "every service connection is encrypted");
    app.stop().await;

    // Plaintext: the server has no pg_hba line for it.
    let e =
        check_connection(&with_tls(&pg, "sslmode=disable"), timeout).await.expect_err("plaintext refused");
    eprintln!("TLS refused: PostgreSQL sslmode=disable: {e}");
    assert!(e.to_string().contains("only encrypted connections"), "{e}");
    // No sslmode at all is plaintext too (as before TLS support).
    let e = check_connection(&pg.url(), timeout).await.expect_err("no sslmode: plaintext, refused");
    assert!(e.to_string().contains("only encrypted connections"), "{e}");
    // A CA that did not sign the server's certificate.
    let e = check_connection(&with_tls(&pg, &format!("sslmode=verify-full&sslrootcert={wrong_ca}")), timeout)
        .await
        .expect_err("wrong CA refused");
    eprintln!("TLS refused: PostgreSQL verify-full, wrong CA: {e}");
    assert!(e.to_string().contains("not signed by a CA of sslrootcert"), "{e}");
    let e = check_connection(&with_tls(&pg, &format!("sslmode=verify-ca&sslrootcert={wrong_ca}")), timeout)
        .await
        .expect_err("wrong CA refused by verify-ca too");
    assert!(e.to_string().contains("not signed by a CA of sslrootcert"), "{e}");
    // sslmode=require: encrypted, not verified (a wrong CA is not looked at).
    check_connection(&with_tls(&pg, "sslmode=require"), timeout).await.expect("require encrypts");

    // A certificate (of the right CA) naming another host: verify-full
    // refuses it, verify-ca accepts it. Rotated by a reload.
    pg.set_ssl_identity(&pki.wrong_name.0, &pki.wrong_name.1);
    pg.reload();
    let started = Instant::now();
    let e = loop {
        match check_connection(&full, timeout).await {
            Err(e) => break e,
            Ok(()) => {
                assert!(started.elapsed() < Duration::from_secs(10), "the new certificate was never served");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!("TLS refused: PostgreSQL verify-full, certificate for another name: {e}");
    assert!(e.to_string().contains("does not name the host"), "{e}");
    check_connection(&with_tls(&pg, &format!("sslmode=verify-ca&sslrootcert={ca}")), timeout)
        .await
        .expect("verify-ca checks the chain only");
    // The migration path uses the same connector (and says why it failed).
    let e = bi_data::store::migrate::run(&full, timeout).await.expect_err("migrate refuses the name too");
    assert!(e.to_string().contains("does not name the host"), "{e}");
}

/// A redis-server speaking only TLS (no plaintext port).
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    async fn start(pki: &Pki) -> TlsRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &pki.path("server.pem"), "--tls-key-file", &pki.path("server.key")])
            .args(["--tls-ca-cert-file", &pki.path("ca.pem"), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let r = TlsRedis { child, port };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cache_count(m: &std::collections::BTreeMap<String, f64>, result: &str) -> f64 {
    m.get(&key("bi_data_cache_requests_total", &[("result", result)])).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_over_rediss_with_the_ca_and_refused_with_another_ca() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki).await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let (ca, wrong_ca) = (pki.path("ca.pem"), pki.path("wrong-ca.pem"));

    let app = TestApp::spawn_with(&["--redis-url", &url, "--redis-ca", &ca]).await;
    let t = Tenant::new();
    let created = app.create::<bi_data::pb::Job>(&t, job("cached over tls")).await;
    let m0 = scrape(app.metrics_addr).await;
    assert_eq!(app.get::<bi_data::pb::Job>(&t, &created.id).await, created);
    assert_eq!(app.get::<bi_data::pb::Job>(&t, &created.id).await, created);
    let m1 = scrape(app.metrics_addr).await;
    assert_eq!(cache_count(&m1, "miss") - cache_count(&m0, "miss"), 1.0, "the first read filled the cache");
    assert_eq!(cache_count(&m1, "hit") - cache_count(&m0, "hit"), 1.0, "the second was served from Redis");
    assert_eq!(cache_count(&m1, "error"), 0.0);
    app.stop().await;

    // Another CA: no Redis command gets through; reads still answer (from
    // PostgreSQL) and the cache's health turns NOT_SERVING.
    let app =
        TestApp::spawn_with(&["--redis-url", &url, "--redis-ca", &wrong_ca, "--cache-breaker-failures", "1"])
            .await;
    let created = app.create::<bi_data::pb::Job>(&t, job("not cached")).await;
    for _ in 0..3 {
        assert_eq!(app.get::<bi_data::pb::Job>(&t, &created.id).await, created);
    }
    let started = Instant::now();
    while app.health(app::CACHE_HEALTH).await != Some(ServingStatus::NotServing) {
        assert!(started.elapsed() < Duration::from_secs(5), "cache health stayed SERVING with the wrong CA");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = scrape(app.metrics_addr).await;
    assert_eq!(cache_count(&m, "hit"), 0.0, "nothing was read from Redis");
    assert_eq!(
        m.get(&key("bi_data_cache_breaker_open", &[])).copied(),
        Some(1.0),
        "the refused handshake opened the breaker"
    );
    app.stop().await;

    // A CA file with a plaintext URL is a start-up error, not silent plaintext.
    let plain = format!("redis://127.0.0.1:{}", redis.port);
    let e = app::start(serve_args(&["--redis-url", &plain, "--redis-ca", &ca])).await.err().expect("refused");
    assert!(e.to_string().contains("not rediss://"), "{e}");
}
