//! The pipelined transaction protocol (docs/performance.md): a read sends
//! BEGIN, the tenant scope, its statements and COMMIT in one round trip. The
//! statements must see the scope, and whatever happens the connection must
//! go back to the pool outside any transaction, with no tenant left set.

use std::time::Duration;

use bi_data::{
    error::Error,
    store::{Scope, Store},
};
use uuid::Uuid;

use crate::common::serve_args;

fn scope(tenant: Uuid) -> Scope {
    Scope {
        tenant,
        actor: "test".into(),
        admin: true,
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(5),
        deadline: None,
        rpc: None,
        lsn: None,
    }
}

/// The tenant setting of the pool's only connection, outside any transaction
/// (empty: the transaction-local scope ended with its transaction).
async fn leftover_tenant(store: &Store) -> String {
    let client = store.primary().get().await.expect("connection");
    client
        .query_one("SELECT coalesce(current_setting('app.tenant_id', true), '')", &[])
        .await
        .expect("query")
        .get(0)
}

#[tokio::test]
async fn pipelined_reads_see_the_scope_and_leave_the_connection_clean() {
    // One connection, so every call below reuses it.
    let args = serve_args(&["--pool-size", "1"]);
    let store = Store::new(&args.db, Duration::from_secs(1)).expect("store");
    let tenant = Uuid::new_v4();

    let rows = store
        .read(
            &scope(tenant),
            &[
                ("SELECT current_setting('app.tenant_id'), current_setting('transaction_read_only')", &[]),
                ("SELECT current_setting('statement_timeout')", &[]),
            ],
        )
        .await
        .expect("read");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0].get::<_, String>(0), tenant.to_string());
    assert_eq!(rows[0][0].get::<_, String>(1), "on");
    assert_eq!(rows[1][0].get::<_, String>(0), "5s");
    assert_eq!(leftover_tenant(&store).await, "");

    // A statement failing at run time (after it prepared): its error, and the
    // statement after it does not run in a half-done transaction.
    let err = store
        .read(&scope(tenant), &[("SELECT 1 / (random() * 0)::int", &[]), ("SELECT 2", &[])])
        .await
        .unwrap_err();
    // division_by_zero is SQLSTATE class 22 (data exception): INVALID_ARGUMENT.
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(leftover_tenant(&store).await, "");

    // A statement that does not prepare takes the plain path: an error too.
    let err = store.read(&scope(tenant), &[("SELECT no_such_column", &[])]).await.unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert_eq!(leftover_tenant(&store).await, "");

    // And the connection still serves the next caller, with its own tenant.
    let other = Uuid::new_v4();
    let rows = store.read(&scope(other), &[("SELECT current_setting('app.tenant_id')", &[])]).await.unwrap();
    assert_eq!(rows[0][0].get::<_, String>(0), other.to_string());
    assert_eq!(leftover_tenant(&store).await, "");
    store.close();
}
