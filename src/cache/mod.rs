//! The shared cache: `service::ReadCache` over Redis (deadpool-redis), with
//! an optional near cache in the process. Every resource gets it through
//! the service's read seam; nothing here knows a resource but by its
//! declaration. ARCHITECTURE.md ("The cache") has the design and the races
//! it closes; in short:
//!
//! - **Keys** (`bi:c<codec version>:` prefix, `P`): records under
//!   `P<epoch>:<tenant>:<resource>:<rgen>:r:<id>`, query results under
//!   `P<epoch>:<tenant>:<resource>:<qgen>:q:<hash of the query>`. The tenant
//!   id leads every key of its data, so no two tenants share one. Keys are
//!   never logged nor put on spans.
//! - **Counters**: `P:epoch` (moved after an outage: nothing written before
//!   it is read again), per tenant and resource `P:g:<t>:<r>` (the query
//!   generation, moved by every committed write) and `P:rg:<t>:<r>` (the
//!   record generation, moved by bulk changes).
//! - **No stale fill**: a record miss leaves a lease in the key; the fill
//!   stores only over its own lease, and an invalidation deletes it. A query
//!   result is stored only if the generation it was computed at is current.
//! - Each operation is one Lua script (one round trip), `lua/*.lua`.
//! - **Failures** are misses: short timeouts, a circuit breaker
//!   (`breaker.rs`), logged once per state change; the epoch moves before
//!   reads resume.

mod breaker;
mod flight;
mod near;

use std::{
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_redis::{Manager, Pool, Runtime};
use futures_util::{StreamExt, future::BoxFuture};
use prometheus::{Histogram, IntCounter};
use redis::{
    AsyncConnectionConfig, FromRedisValue, Script, ScriptInvocation, Value as RValue,
    aio::MultiplexedConnection,
};
use sha2::{Digest, Sha256};
use tracing::{Instrument, field::Empty};
use uuid::Uuid;

use self::{
    breaker::Breaker,
    flight::{Flights, Join},
    near::Near,
};
use crate::{
    config::CacheArgs,
    domain::{codec, record::Record, schema::Resource},
    error::Error,
    metrics::CacheMetrics,
    service::{Cached, Changes, Compute, ReadCache, Scope, Ticket},
};

/// How long a miss's lease keeps others from filling the same record.
const LEASE_MS: u64 = 3000;

const LIB: &str = include_str!("lua/lib.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

struct Scripts {
    get: Script,
    fill: Script,
    query_get: Script,
    query_fill: Script,
    invalidate: Script,
    bump: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            get: script(include_str!("lua/get.lua")),
            fill: script(include_str!("lua/fill.lua")),
            query_get: script(include_str!("lua/query_get.lua")),
            query_fill: script(include_str!("lua/query_fill.lua")),
            invalidate: script(include_str!("lua/invalidate.lua")),
            bump: script(include_str!("lua/bump.lua")),
        }
    }
}

/// What a read may use Redis for.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    Read,
    Invalidate,
}

/// The state the cache reports (health, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Redis in use.
    Up,
    /// Breaker open or recovering: every read goes to PostgreSQL.
    Down,
}

pub struct RedisCache {
    me: Weak<RedisCache>,
    pool: Pool,
    client: redis::Client,
    conn: RwLock<Option<MultiplexedConnection>>,
    connecting: tokio::sync::Mutex<()>,
    scripts: Scripts,
    prefix: String,
    epoch_key: String,
    /// Pub/sub channel of near-cache invalidations ("" without a near cache).
    channel: String,
    ttl_ms: u64,
    query_ttl_ms: u64,
    timeout: Duration,
    connect_timeout: Duration,
    probe_every: Duration,
    breaker: Breaker,
    probing: AtomicBool,
    near: Option<Near>,
    flights: Flights,
    metrics: CacheMetrics,
    /// The hot path's series, resolved once (a labelled look-up hashes and
    /// locks on every call).
    series: Series,
}

struct Series {
    hit: IntCounter,
    miss: IntCounter,
    error: IntCounter,
    near_hit: IntCounter,
    near_miss: IntCounter,
    /// One per op of [`OPS`].
    duration: Vec<Histogram>,
}

/// The operations (scripts) timed in `bi_data_cache_command_duration_seconds`.
const OPS: [&str; 5] = ["get_records", "fill_records", "get_query", "fill_query", "invalidate"];

impl Series {
    fn new(m: &CacheMetrics) -> Series {
        let r = |l: &str| m.requests.with_label_values(&[l]);
        let n = |l: &str| m.near.with_label_values(&[l]);
        Series {
            hit: r("hit"),
            miss: r("miss"),
            error: r("error"),
            near_hit: n("hit"),
            near_miss: n("miss"),
            duration: OPS.iter().map(|op| m.duration.with_label_values(&[*op])).collect(),
        }
    }

    fn duration(&self, op: &str) -> &Histogram {
        &self.duration[OPS.iter().position(|o| *o == op).expect("a declared op")]
    }
}

/// `<tenant>:<resource>`: the part of every key naming whose data it is.
fn base(scope: &Scope, res: &Resource) -> String {
    format!("{}:{}", scope.tenant, res.name)
}

fn near_key(base: &str, id: &Uuid) -> String {
    format!("{base}:{}", id.simple())
}

/// A lease token: random, never 0 (0 is `Ticket::NONE`).
fn lease_token() -> u64 {
    Uuid::new_v4().as_u64_pair().0 | 1
}

/// The client of `url`: `redis://` plaintext; `rediss://` TLS, the
/// server's certificate verified (chain and host name) against `ca` (a PEM
/// file), or against the machine's trust store without one.
fn client_for(url: &str, ca: Option<&std::path::Path>) -> Result<redis::Client, Error> {
    // Never echo the URL: it may hold a password.
    let bad = |e: redis::RedisError| Error::Internal(format!("--redis-url is not usable: {:?}", e.kind()));
    let tls = url.starts_with("rediss://");
    match ca {
        None => redis::Client::open(url).map_err(bad),
        Some(ca) if !tls => Err(Error::Startup(format!(
            "--redis-ca {} is set but --redis-url is not rediss://: the connection would not be encrypted",
            ca.display()
        ))),
        Some(ca) => {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Startup(format!("cannot read --redis-ca {}: {e}", ca.display())))?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem) },
            )
            .map_err(|e| {
                Error::Startup(format!(
                    "--redis-ca {}: {:?}: {}",
                    ca.display(),
                    e.kind(),
                    e.detail().unwrap_or("")
                ))
            })
        }
    }
}

impl RedisCache {
    /// A cache over `url` (no connection yet: the first call connects, and
    /// a Redis that is down at start is an open breaker, not an error).
    pub fn new(url: &str, args: &CacheArgs, metrics: CacheMetrics) -> Result<Arc<RedisCache>, Error> {
        let connect_timeout = Duration::from_millis(args.cache_connect_timeout_ms.max(1));
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(connect_timeout));
        // Never echo the URL: it may hold a password.
        let bad =
            |e: redis::RedisError| Error::Internal(format!("--redis-url is not usable: {:?}", e.kind()));
        let client = client_for(url, args.redis_ca.as_deref())?;
        // The pool's connections carry the same TLS settings as the client.
        let manager = Manager::new_with_config(client.get_connection_info().clone(), config).map_err(bad)?;
        // The pool creates connections (with the connect timeout) and is
        // asked again only after one failed: a multiplexed connection
        // carries every concurrent command, and a pooled get would cost a
        // PING round trip (deadpool-redis recycles with one) per command.
        let pool = Pool::builder(manager)
            .max_size(2)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .wait_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| Error::Internal(format!("redis pool: {e}")))?;
        let prefix = format!("bi:c{}:", codec::VERSION);
        let near = args
            .cache_near
            .then(|| Near::new(args.cache_near_capacity, Duration::from_millis(args.cache_near_ttl_ms)));
        let cache = Arc::new_cyclic(|me| RedisCache {
            me: me.clone(),
            pool,
            client,
            conn: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            scripts: Scripts::new(),
            epoch_key: format!("{prefix}epoch"),
            channel: if near.is_some() { format!("{prefix}invalidations") } else { String::new() },
            prefix,
            ttl_ms: args.cache_ttl_secs.max(1) * 1000,
            query_ttl_ms: args.cache_query_ttl_secs.max(1) * 1000,
            timeout: args.timeout(),
            connect_timeout,
            probe_every: Duration::from_millis(args.cache_breaker_probe_ms.max(10)),
            breaker: Breaker::new(args.cache_breaker_failures),
            probing: AtomicBool::new(false),
            near,
            flights: Flights::default(),
            series: Series::new(&metrics),
            metrics,
        });
        if cache.near.is_some() {
            tokio::spawn(Arc::downgrade(&cache).subscribe());
        }
        Ok(cache)
    }

    pub fn state(&self) -> State {
        if self.breaker.reads() { State::Up } else { State::Down }
    }

    /// Records in the near cache (0 without one).
    pub fn near_len(&self) -> usize {
        self.near.as_ref().map_or(0, Near::len)
    }

    /// Whether the near cache is subscribed to invalidations.
    pub fn near_live(&self) -> bool {
        self.near.as_ref().is_some_and(Near::is_live)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        if let Some(c) = self.conn.read().expect("conn lock").clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.read().expect("conn lock").clone() {
            return Ok(c);
        }
        let obj = self.pool.get().await.map_err(|e| format!("connect: {e}"))?;
        let c = deadpool_redis::Connection::take(obj);
        *self.conn.write().expect("conn lock") = Some(c.clone());
        Ok(c)
    }

    fn drop_connection(&self) {
        *self.conn.write().expect("conn lock") = None;
    }

    /// The time one command may take for this call: the configured timeout,
    /// at most half of what is left of the caller's deadline.
    fn budget(&self, scope: &Scope) -> Option<Duration> {
        let left = match scope.deadline {
            Some(d) => d.saturating_duration_since(tokio::time::Instant::now()) / 2,
            None => self.timeout,
        };
        let t = self.timeout.min(left);
        (t >= Duration::from_millis(1)).then_some(t)
    }

    /// Runs one script: a CLIENT span, the duration histogram, the breaker.
    /// `None` on any failure (counted, logged at debug; the breaker opens
    /// past its threshold, at once for an invalidation).
    async fn run<T: FromRedisValue>(
        &self,
        op: &'static str,
        scope: &Scope,
        allowed: Use,
        inv: &ScriptInvocation<'_>,
    ) -> Option<T> {
        let open = match allowed {
            Use::Read => !self.breaker.reads(),
            Use::Invalidate => !self.breaker.writes(),
        };
        if open {
            return None;
        }
        let budget = self.budget(scope)?;
        let span = tracing::info_span!(
            "redis",
            otel.kind = "client",
            otel.name = %format_args!("EVALSHA {op}"),
            db.system.name = "redis",
            db.operation.name = "EVALSHA",
            db.stored_procedure.name = op,
            error.type = Empty,
        );
        let t0 = Instant::now();
        let call = async {
            let mut conn = self.connection().await?;
            inv.invoke_async::<T>(&mut conn).await.map_err(|e| {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.drop_connection();
                }
                format!("{:?}", e.kind())
            })
        };
        let result = match tokio::time::timeout(budget, call).instrument(span.clone()).await {
            Ok(r) => r,
            Err(_) => Err("timeout".to_owned()),
        };
        self.series.duration(op).observe(t0.elapsed().as_secs_f64());
        match result {
            Ok(v) => {
                self.breaker.success();
                Some(v)
            }
            Err(why) => {
                span.record("error.type", why.as_str());
                tracing::debug!(parent: &span, op, error = %why, "redis command failed");
                let tripped =
                    if allowed == Use::Invalidate { self.breaker.trip() } else { self.breaker.failure() };
                if tripped {
                    self.opened(&why);
                }
                None
            }
        }
    }

    /// The breaker just opened: say so once, stop the near cache, probe.
    fn opened(&self, why: &str) {
        tracing::warn!(reason = why, "redis cache unavailable: circuit breaker open, reads go to PostgreSQL");
        self.metrics.breaker_open.set(1);
        if let Some(n) = &self.near {
            n.clear();
            self.metrics.near_entries.set(0);
        }
        if !self.probing.swap(true, Ordering::SeqCst) {
            tokio::spawn(probe(self.me.clone()));
        }
    }

    /// One probe: true when the breaker closed.
    async fn try_recover(&self) -> bool {
        self.drop_connection();
        let ping = async {
            let mut c = self.connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await.map_err(|e| format!("{:?}", e.kind()))?;
            Ok::<_, String>(c)
        };
        let Ok(Ok(mut c)) = tokio::time::timeout(self.connect_timeout, ping).await else {
            return false;
        };
        if !self.breaker.recovering() && self.breaker.is_open() {
            return false;
        }
        let mut bump = self.scripts.bump.prepare_invoke();
        bump.key(&self.epoch_key).arg(&self.channel);
        match tokio::time::timeout(self.connect_timeout, bump.invoke_async::<i64>(&mut c)).await {
            Ok(Ok(_)) if self.breaker.close() => {
                tracing::info!("redis cache available again: epoch moved, circuit breaker closed");
                self.metrics.breaker_open.set(0);
                true
            }
            _ => {
                self.breaker.trip();
                false
            }
        }
    }

    fn count(&self, result: &str, n: u64) {
        let c = match result {
            "hit" => &self.series.hit,
            "miss" => &self.series.miss,
            _ => &self.series.error,
        };
        if n > 0 {
            c.inc_by(n);
        }
    }

    async fn lookup(&self, scope: &Scope, res: &'static Resource, ids: &[Uuid]) -> Vec<Cached> {
        let base = base(scope, res);
        let mut out: Vec<Option<Cached>> = ids.iter().map(|_| None).collect();
        let mut ask: Vec<usize> = Vec::with_capacity(ids.len());
        let mut seqs: Vec<(String, u64)> = Vec::new();
        let near = self.near.as_ref().filter(|_| self.breaker.reads());
        for (i, id) in ids.iter().enumerate() {
            if let Some(n) = near {
                let key = near_key(&base, id);
                if let Some(rec) = n.get(&key) {
                    self.series.near_hit.inc();
                    out[i] = Some(Cached::Hit(rec));
                    continue;
                }
                self.series.near_miss.inc();
                let seq = n.seq(&key);
                seqs.push((key, seq));
            }
            ask.push(i);
        }
        if !ask.is_empty() {
            let token = lease_token();
            let mut inv = self.scripts.get.prepare_invoke();
            inv.key(&self.epoch_key).arg(&self.prefix).arg(&base).arg(token).arg(LEASE_MS);
            for &i in &ask {
                inv.arg(ids[i].simple().to_string());
            }
            let replies = self.run::<Vec<RValue>>("get_records", scope, Use::Read, &inv).await;
            match replies.filter(|r| r.len() == ask.len()) {
                None => {
                    self.count("error", ask.len() as u64);
                    for &i in &ask {
                        out[i] = Some(Cached::Miss(Ticket::NONE));
                    }
                }
                Some(replies) => {
                    for (k, (reply, &i)) in replies.into_iter().zip(&ask).enumerate() {
                        out[i] = Some(match reply {
                            RValue::BulkString(b) => match codec::decode(res, &b[1..]) {
                                Some(rec) => {
                                    self.count("hit", 1);
                                    if let (Some(n), Some((key, seq))) = (near, seqs.get(k)) {
                                        n.put(key.clone(), rec.clone(), *seq);
                                    }
                                    Cached::Hit(rec)
                                }
                                None => {
                                    self.count("error", 1);
                                    Cached::Miss(Ticket::NONE)
                                }
                            },
                            RValue::Int(1) => {
                                self.count("miss", 1);
                                Cached::Miss(Ticket(token))
                            }
                            _ => {
                                self.count("miss", 1);
                                Cached::Miss(Ticket::NONE)
                            }
                        });
                    }
                }
            }
            if let Some(n) = &self.near {
                self.metrics.near_entries.set(n.len() as i64);
            }
        }
        out.into_iter().map(|c| c.unwrap_or(Cached::Miss(Ticket::NONE))).collect()
    }

    async fn store(&self, scope: &Scope, res: &'static Resource, recs: &[(Ticket, &Record)]) {
        let mut inv = self.scripts.fill.prepare_invoke();
        inv.key(&self.epoch_key).arg(&self.prefix).arg(base(scope, res)).arg(self.ttl_ms);
        let mut any = false;
        for (t, rec) in recs.iter().filter(|(t, _)| *t != Ticket::NONE) {
            let mut entry = Vec::with_capacity(1024);
            entry.push(b'R');
            entry.extend_from_slice(&codec::encode(rec));
            inv.arg(rec.id().simple().to_string()).arg(t.0).arg(entry);
            any = true;
        }
        if any {
            let _ = self.run::<i64>("fill_records", scope, Use::Read, &inv).await;
        }
    }

    async fn cached_query(
        &self,
        scope: &Scope,
        deps: &[&'static Resource],
        key: String,
        compute: Compute<'_>,
    ) -> Result<Vec<u8>, Error> {
        let Some((first, more)) = deps.split_first() else { return compute.await };
        let base = base(scope, first);
        let more: Vec<String> = more.iter().map(|r| self::base(scope, r)).collect();
        let hash: String = Sha256::digest(key.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut inv = self.scripts.query_get.prepare_invoke();
        inv.key(&self.epoch_key).arg(&self.prefix).arg(&base).arg(&hash);
        for b in &more {
            inv.arg(b);
        }
        let reply = self.run::<Vec<RValue>>("get_query", scope, Use::Read, &inv).await;
        let text = |v: &RValue| match v {
            RValue::BulkString(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        };
        let (epoch, gen_) = match reply.as_deref() {
            Some([e, g, RValue::BulkString(v)]) if text(e).is_some() && text(g).is_some() => {
                self.count("hit", 1);
                return Ok(v.clone());
            }
            Some([e, g]) => match (text(e), text(g)) {
                (Some(e), Some(g)) => (e, g),
                _ => {
                    self.count("error", 1);
                    return compute.await;
                }
            },
            _ => {
                self.count("error", 1);
                return compute.await;
            }
        };
        self.count("miss", 1);
        match self.flights.join(format!("{base}:{epoch}:{gen_}:{hash}")) {
            Join::Wait(rx) => {
                self.metrics.flights.with_label_values(&["waiter"]).inc();
                match flight::wait(rx).await {
                    Some(bytes) => Ok((*bytes).clone()),
                    None => compute.await,
                }
            }
            Join::Lead(leader) => {
                self.metrics.flights.with_label_values(&["leader"]).inc();
                let bytes = compute.await?;
                let mut fill = self.scripts.query_fill.prepare_invoke();
                fill.key(&self.epoch_key)
                    .arg(&self.prefix)
                    .arg(&base)
                    .arg(&hash)
                    .arg(&epoch)
                    .arg(&gen_)
                    .arg(self.query_ttl_ms)
                    .arg(&bytes[..]);
                for b in &more {
                    fill.arg(b);
                }
                let _ = self.run::<i64>("fill_query", scope, Use::Read, &fill).await;
                let bytes = Arc::new(bytes);
                leader.finish(bytes.clone());
                Ok(Arc::unwrap_or_clone(bytes))
            }
        }
    }

    async fn drop_changed(&self, scope: &Scope, changes: &Changes) {
        let resources = changes.resources();
        let mut inv = self.scripts.invalidate.prepare_invoke();
        inv.key(&self.epoch_key).arg(&self.prefix).arg(&self.channel);
        for res in resources {
            let base = base(scope, res);
            let bulk = changes.bulk.iter().any(|b| b.name == res.name);
            let ids: Vec<&Uuid> =
                changes.rows.iter().filter(|(r, _)| r.name == res.name).map(|(_, id)| id).collect();
            // This process's near cache first, before the call answers.
            if let Some(n) = &self.near {
                for id in &ids {
                    n.invalidate(&near_key(&base, id));
                }
                if bulk {
                    n.invalidate(&format!("{base}:*"));
                }
            }
            inv.arg(&base).arg(if bulk { "1" } else { "0" }).arg(ids.len());
            for id in ids {
                inv.arg(id.simple().to_string());
            }
        }
        // Not sent: the breaker is open, and the epoch moves before reads resume.
        let _ = self.run::<i64>("invalidate", scope, Use::Invalidate, &inv).await;
    }
}

/// While open: every `probe_every`, a fresh connection and a PING; when it
/// answers, invalidations resume, the epoch moves, then reads resume. Ends
/// when the breaker is closed or the cache is gone.
async fn probe(cache: Weak<RedisCache>) {
    loop {
        let Some(every) = cache.upgrade().map(|c| c.probe_every) else { return };
        tokio::time::sleep(every).await;
        let Some(c) = cache.upgrade() else { return };
        if c.try_recover().await {
            c.probing.store(false, Ordering::SeqCst);
            // A failure between the close and here found `probing` still
            // set and left the probing to this loop.
            if !c.breaker.is_open() || c.probing.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }
}

impl ReadCache for RedisCache {
    fn get<'a>(
        &'a self,
        scope: &'a Scope,
        res: &'static Resource,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Vec<Cached>> {
        Box::pin(self.lookup(scope, res, ids))
    }

    fn fill<'a>(
        &'a self,
        scope: &'a Scope,
        res: &'static Resource,
        recs: &'a [(Ticket, &'a Record)],
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.store(scope, res, recs))
    }

    fn query<'a>(
        &'a self,
        scope: &'a Scope,
        deps: &'a [&'static Resource],
        key: String,
        compute: Compute<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
        Box::pin(self.cached_query(scope, deps, key, compute))
    }

    fn invalidate<'a>(&'a self, scope: &'a Scope, changes: &'a Changes) -> BoxFuture<'a, ()> {
        Box::pin(self.drop_changed(scope, changes))
    }
}

trait Subscriber {
    fn subscribe(self) -> BoxFuture<'static, ()>;
}

impl Subscriber for Weak<RedisCache> {
    /// The near cache's invalidations: subscribed, it serves; the
    /// subscription lost, it empties itself and resubscribes. Ends with the cache.
    fn subscribe(self) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut was_live = false;
            loop {
                let Some(cache) = self.upgrade() else { return };
                let (client, channel, wait) =
                    (cache.client.clone(), cache.channel.clone(), cache.connect_timeout);
                drop(cache);
                let sub = async {
                    let mut ps = client.get_async_pubsub().await?;
                    ps.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(ps)
                };
                if let Ok(Ok(ps)) = tokio::time::timeout(wait, sub).await {
                    let Some(cache) = self.upgrade() else { return };
                    let near = cache.near.as_ref().expect("subscribed with a near cache");
                    near.go_live();
                    if !was_live {
                        tracing::info!("near cache subscribed to invalidations");
                        was_live = true;
                    }
                    drop(cache);
                    let mut messages = ps.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(cache) = self.upgrade() else { return };
                        let near = cache.near.as_ref().expect("subscribed with a near cache");
                        let payload = msg.get_payload_bytes();
                        for key in payload.split(|b| *b == b'\n') {
                            if let Ok(k) = std::str::from_utf8(key) {
                                near.invalidate(k);
                            }
                        }
                        cache.metrics.near_entries.set(near.len() as i64);
                    }
                }
                let Some(cache) = self.upgrade() else { return };
                cache.near.as_ref().expect("subscribed with a near cache").go_dark();
                cache.metrics.near_entries.set(0);
                if was_live {
                    tracing::warn!("near cache lost its subscription: emptied, resubscribing");
                    was_live = false;
                }
                let every = cache.probe_every;
                drop(cache);
                tokio::time::sleep(every).await;
            }
        })
    }
}
