//! Tokens and roles: HS256 bearer tokens are minted and verified here, the
//! role a method needs is derived here ([`required_role`]), and the caller's
//! identity is an [`AuthContext`]. Failures are an [`AuthError`]; this module
//! knows nothing of gRPC. The tower layer that applies it to every call
//! (never a handler) and turns an [`AuthError`] into a status is
//! `api::middleware::auth`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a call is refused. The message is the one the caller sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials (missing, malformed, expired, bad signature).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid caller without the role the method needs.
    #[error("{0}")]
    PermissionDenied(String),
}

impl AuthError {
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        AuthError::Unauthenticated(message.into())
    }
}

/// A role named in a token. Higher roles include lower ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Reader,
    Writer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is calling, for which tenant, with which roles.
#[derive(Clone, Debug)]
pub struct AuthContext {
    pub tenant_id: Uuid,
    pub subject: String,
    pub roles: Vec<Role>,
}

impl AuthContext {
    /// `admin` implies `writer` implies `reader`.
    pub fn has(&self, needed: Role) -> bool {
        self.roles.iter().any(|r| *r >= needed)
    }

    /// [`AuthContext::has`], as the refusal a caller without the role gets.
    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        if self.has(needed) {
            return Ok(());
        }
        Err(AuthError::PermissionDenied(format!(
            "this method needs the {} role",
            format!("{needed:?}").to_lowercase()
        )))
    }

    /// Development only ([`AuthMode::InsecureDev`]): every role for a tenant.
    pub fn insecure_dev(tenant_id: Uuid) -> AuthContext {
        AuthContext {
            tenant_id,
            subject: "insecure-dev".into(),
            roles: vec![Role::Reader, Role::Writer, Role::Admin],
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    tenant_id: String,
    roles: Vec<String>,
    exp: u64,
    iat: u64,
}

/// Seconds of clock skew accepted on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Most tokens remembered as verified; the memory is emptied when full.
const VERIFIED_MAX: usize = 10_000;

/// Tokens verified recently, by their exact text, with their caller and
/// expiry. A caller sends the same token on every call; checking its
/// signature and parsing its claims each time was ~4 % of a GetJob's server
/// CPU. Only tokens that verified are kept, and expiry is checked on every
/// use, so the answer is the one `verify` would give.
type Verified = RwLock<HashMap<Box<str>, (AuthContext, u64)>>;

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    verified: Arc<Verified>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            verified: Arc::default(),
        }
    }

    pub fn mint(&self, tenant: Uuid, roles: &[Role], subject: &str, ttl: Duration) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            tenant_id: tenant.to_string(),
            roles: roles
                .iter()
                .map(|r| match r {
                    Role::Reader => "reader",
                    Role::Writer => "writer",
                    Role::Admin => "admin",
                })
                .map(str::to_owned)
                .collect(),
            exp: now + ttl.as_secs(),
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of a serializable struct cannot fail")
    }

    /// Verifies signature, algorithm and expiry; returns the caller.
    pub fn verify(&self, token: &str) -> Result<AuthContext, AuthError> {
        let known = self.verified.read().ok().and_then(|m| m.get(token).cloned());
        if let Some((ctx, exp)) = known
            && now_secs() <= exp.saturating_add(LEEWAY_SECS)
        {
            return Ok(ctx);
        }
        let (ctx, exp) = self.verify_token(token)?;
        if let Ok(mut m) = self.verified.write() {
            if m.len() >= VERIFIED_MAX {
                m.clear();
            }
            m.insert(token.into(), (ctx.clone(), exp));
        }
        Ok(ctx)
    }

    fn verify_token(&self, token: &str) -> Result<(AuthContext, u64), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::InvalidSignature => "token signature invalid",
                ErrorKind::InvalidAlgorithm => "token algorithm not accepted (HS256 only)",
                _ => "token malformed",
            };
            AuthError::unauthenticated(why)
        })?;
        let tenant_id = crate::domain::value::canonical_uuid(&data.claims.tenant_id)
            .ok_or_else(|| AuthError::unauthenticated("token tenant_id is not a UUID"))?;
        let roles = data.claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        Ok((AuthContext { tenant_id, subject: data.claims.sub, roles }, data.claims.exp))
    }
}

/// How callers authenticate.
#[derive(Clone)]
pub enum AuthMode {
    /// Bearer JWT required.
    Jwt(Arc<TokenKeys>),
    /// Development only: `x-tenant-id` header, all roles. Refused at start
    /// unless the listen address is loopback.
    InsecureDev,
}

/// The role a gRPC method needs, from its path `/pkg.Service/Method`.
/// `None` means no authentication (health, reflection).
pub fn required_role(path: &str) -> Option<Role> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
        return None;
    }
    if service == "bi.data.v1.AuditService" || method == "GetQueryStats" {
        return Some(Role::Admin);
    }
    const READ_PREFIXES: [&str; 8] =
        ["Get", "List", "BatchGet", "Search", "Export", "Aggregate", "Download", "Generate"];
    if READ_PREFIXES.iter().any(|p| method.starts_with(p)) { Some(Role::Reader) } else { Some(Role::Writer) }
}

/// Parses `reader,writer` into roles, rejecting unknown names.
pub fn parse_roles(names: &[String]) -> Result<Vec<Role>, String> {
    let mut seen = HashSet::new();
    names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .filter(|n| seen.insert(n.to_string()))
        .map(|n| Role::parse(n).ok_or_else(|| format!("unknown role '{n}' (reader, writer, admin)")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_method() {
        assert_eq!(required_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), None);
        assert_eq!(required_role("/bi.data.v1.JobService/GetJob"), Some(Role::Reader));
        assert_eq!(required_role("/bi.data.v1.JobService/BatchGetJobs"), Some(Role::Reader));
        assert_eq!(required_role("/bi.data.v1.JobService/CreateJob"), Some(Role::Writer));
        assert_eq!(required_role("/bi.data.v1.JobService/BatchCreateJobs"), Some(Role::Writer));
        assert_eq!(required_role("/bi.data.v1.AuditService/ListAuditEvents"), Some(Role::Admin));
        assert_eq!(required_role("/bi.data.v1.AnalyticsService/GetQueryStats"), Some(Role::Admin));
    }

    #[test]
    fn mint_and_verify() {
        let keys = TokenKeys::new("s3cret");
        let t = Uuid::new_v4();
        let tok = keys.mint(t, &[Role::Writer], "me", Duration::from_secs(60));
        let ctx = keys.verify(&tok).unwrap();
        assert_eq!(ctx.tenant_id, t);
        assert!(ctx.has(Role::Reader) && ctx.has(Role::Writer) && !ctx.has(Role::Admin));
        assert_eq!(
            TokenKeys::new("other").verify(&tok).unwrap_err(),
            AuthError::unauthenticated("token signature invalid")
        );
        // Again, now from the memory of verified tokens: the same answer.
        let again = keys.verify(&tok).unwrap();
        assert_eq!((again.tenant_id, again.subject, again.roles), (t, "me".to_owned(), vec![Role::Writer]));
        // A token verified by one secret is not taken by another.
        let other = TokenKeys::new("other");
        assert!(other.verify(&tok).is_err());
        assert!(other.verify(&tok).is_err());
        // Tampered: not in the memory, and rejected.
        let mut bad = tok.clone();
        bad.pop();
        assert!(keys.verify(&bad).is_err());
    }

    #[test]
    fn expired_tokens_are_rejected_even_after_a_verification() {
        let keys = TokenKeys::new("s3cret");
        let t = Uuid::new_v4();
        let claims = Claims {
            sub: "me".into(),
            tenant_id: t.to_string(),
            roles: vec!["reader".into()],
            exp: now_secs() - 60,
            iat: now_secs() - 120,
        };
        let tok = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&tok).is_err());
        // Remembered as verified while it was valid, then expired.
        keys.verified.write().unwrap().insert(
            tok.as_str().into(),
            (AuthContext { tenant_id: t, subject: "me".into(), roles: vec![Role::Reader] }, now_secs() - 60),
        );
        assert!(keys.verify(&tok).is_err());
    }
}
