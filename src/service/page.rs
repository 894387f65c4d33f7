//! Opaque keyset page tokens. A token holds the sort-key values of the last
//! row served and a binding hash of (resource, tenant, filter, order,
//! show_deleted): reused with another filter or order it is rejected.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    domain::{schema::FieldKind, value::Value},
    error::Error,
};

#[derive(Serialize, Deserialize)]
struct Token {
    /// Binding hash, hex.
    b: String,
    /// Last row's key values.
    k: Vec<serde_json::Value>,
}

/// Hash binding a token to everything that shapes the result set.
pub fn binding(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn encode(binding: &str, last: &[Value]) -> String {
    let t = Token { b: binding.to_owned(), k: last.iter().map(Value::to_json).collect() };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&t).expect("token serializes"))
}

fn bad(msg: &str) -> Error {
    Error::invalid("page_token", msg)
}

pub fn decode(token: &str, binding: &str, kinds: &[FieldKind]) -> Result<Vec<Value>, Error> {
    if token.len() > 4096 {
        return Err(bad("page token is too long"));
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad("page token is malformed"))?;
    let t: Token = serde_json::from_slice(&raw).map_err(|_| bad("page token is malformed"))?;
    if t.b != binding {
        return Err(bad("page token was issued for another filter, order or show_deleted"));
    }
    if t.k.len() != kinds.len() {
        return Err(bad("page token is malformed"));
    }
    t.k.iter()
        .zip(kinds)
        .map(|(j, k)| Value::from_json(j, *k).ok_or_else(|| bad("page token is malformed")))
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let now = Utc::now();
        let vals = vec![Value::Time(now), Value::Null, Value::Uuid(uuid::Uuid::new_v4()), Value::Int(-3)];
        let kinds = [FieldKind::Timestamp, FieldKind::Text, FieldKind::Uuid, FieldKind::Int];
        let b = binding(&["job", "filter a"]);
        let tok = encode(&b, &vals);
        let back = decode(&tok, &b, &kinds).unwrap();
        // Timestamps keep microsecond precision (PostgreSQL's).
        let Value::Time(t) = back[0] else { panic!() };
        assert_eq!(t.timestamp_micros(), now.timestamp_micros());
        assert_eq!(back[1..], vals[1..]);
        assert!(decode(&tok, &binding(&["job", "filter b"]), &kinds).is_err());
        assert!(decode("not a token", &b, &kinds).is_err());
        assert!(decode(&tok, &b, &kinds[..2]).is_err());
    }
}
