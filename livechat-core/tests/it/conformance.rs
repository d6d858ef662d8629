use livechat_core::store::{MemoryStore, SqliteStore};
use livechat_core::testing::conformance;

#[tokio::test]
async fn memory_store_conforms() {
    conformance(MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    conformance(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_store_keeps_everything_across_a_reopen() {
    use livechat_core::store::{MessageStore, SyncScope};
    use livechat_core::testing::{new_message, workspace_with_contact};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("reopen.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    let (ws, contact) = workspace_with_contact(&store).await;
    let first = store
        .append(new_message(ws, contact, "kept", Some("k")))
        .await
        .unwrap();
    store.close().await;

    let store = SqliteStore::open(&url).await.unwrap();
    let page = store.sync(SyncScope::Workspace(ws), 0, 10).await.unwrap();
    assert_eq!(page.messages, vec![first.message().clone()]);
    let retry = store
        .append(new_message(ws, contact, "kept", Some("k")))
        .await
        .unwrap();
    assert_eq!(
        retry,
        livechat_core::store::Appended::Duplicate(first.into_message()),
        "idempotency survives a restart"
    );
    let next = store
        .append(new_message(ws, contact, "next", None))
        .await
        .unwrap();
    assert_eq!(next.message().seq, 2, "the seq counter survives a restart");
}

#[tokio::test]
async fn sqlite_store_commits_with_wal_and_full_sync_unless_told_otherwise() {
    use livechat_core::store::SqliteStoreOptions;
    use livechat_core::store::sqlite::Durability;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("durable.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(
        store.durability_pragmas().await.unwrap(),
        ("wal".to_owned(), 2),
        "WAL, synchronous=FULL"
    );
    store.close().await;
    let store = SqliteStore::open_with(
        &url,
        SqliteStoreOptions::new().durability(Durability::Normal),
    )
    .await
    .unwrap();
    assert_eq!(
        store.durability_pragmas().await.unwrap(),
        ("wal".to_owned(), 1),
        "WAL, synchronous=NORMAL"
    );
}

#[tokio::test]
async fn sqlite_store_refuses_in_memory_databases() {
    let err = SqliteStore::open("sqlite::memory:").await.unwrap_err();
    assert!(err.to_string().contains("backend"), "{err}");
}

#[test]
fn rs256_accepts_its_own_tokens_and_refuses_algorithm_confusion() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use livechat_core::auth::{Claims, JwtAuthenticator};
    let public = include_bytes!("../fixtures/test-rsa-public.pem");
    let private = include_bytes!("../fixtures/test-rsa-private.pem");
    let auth = JwtAuthenticator::rs256_pem(public).unwrap();
    let claims = Claims::new("agent-1", chrono::Duration::minutes(5));

    let good = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(private).unwrap(),
    )
    .unwrap();
    assert_eq!(auth.verify(&good).unwrap().user_id.as_str(), "agent-1");

    // The classic confusion: HS256 "signed" with the public key as the HMAC secret.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(public),
    )
    .unwrap();
    assert!(
        auth.verify(&confused).is_err(),
        "an HS256 token must not pass an RS256 authenticator"
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::collections::BTreeSet;

    use livechat_core::store::{MessageStore, PostgresStore, PostgresStoreOptions, SyncScope};
    use livechat_core::testing::{
        ScratchDatabase, conformance, new_message, workspace_with_contact,
    };

    #[tokio::test]
    async fn postgres_store_conforms() {
        let Some(db) = ScratchDatabase::create("postgres_store_conforms").await else {
            return;
        };
        let store = PostgresStore::open(&db.url).await.unwrap();
        conformance(store.clone()).await;
        store.close().await;
        db.drop_database().await;
    }

    /// Several nodes (each its own pool) writing into one workspace, and a reader
    /// following with `sync(after)`: Postgres can make a later seq visible before an
    /// earlier one unless seq is handed out in commit order. The reader must never see
    /// a gap that closes later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_never_make_a_reader_skip_a_message() {
        let Some(db) =
            ScratchDatabase::create("concurrent_writers_never_make_a_reader_skip_a_message").await
        else {
            return;
        };
        let options = PostgresStoreOptions::new().max_connections(4);
        let nodes: Vec<PostgresStore> = futures_util::future::join_all(
            (0..3).map(|_| PostgresStore::open_with(&db.url, options.clone())),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let (ws, contact) = workspace_with_contact(&nodes[0]).await;
        const PER_WRITER: usize = 60;
        let mut writers = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for w in 0..4 {
                let node = node.clone();
                writers.push(tokio::spawn(async move {
                    for i in 0..PER_WRITER {
                        let key = format!("n{n}-w{w}-{i}");
                        node.append(new_message(ws, contact, "x", Some(&key)))
                            .await
                            .unwrap();
                    }
                }));
            }
        }
        let total = (nodes.len() * 4 * PER_WRITER) as i64;
        let reader = nodes[1].clone();
        let follow = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            while after < total {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the reader reached seq {after} of {total} in 60 s"
                );
                let page = reader
                    .sync(SyncScope::Workspace(ws), after, 50)
                    .await
                    .unwrap();
                for m in page.messages {
                    assert_eq!(m.seq, after + 1, "sync(after = {after}) skipped a message");
                    after = m.seq;
                    seen.push(m.seq);
                }
            }
            seen
        });
        for w in writers {
            w.await.unwrap();
        }
        let seen = follow.await.unwrap();
        assert_eq!(seen.len() as i64, total);
        let distinct: BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len());
        for node in &nodes {
            node.close().await;
        }
        db.drop_database().await;
    }
}
