//! livechat mounted into an existing axum app, beside the app's own routes.
//!
//! Run: `JWT_SECRET=<32+ bytes> cargo run -p livechat-examples --example axum`

use axum::Router;
use axum::routing::get;
use livechat_core::LiveChat;
use livechat_core::auth::JwtAuthenticator;
use livechat_core::store::SqliteStore;

/// The host's app with livechat on `/socket.io`.
pub(crate) async fn app(
    jwt_secret: &[u8],
    database_url: &str,
) -> anyhow::Result<(Router, LiveChat)> {
    let (livechat, chat) = LiveChat::builder()
        .store(SqliteStore::open(database_url).await?)
        .authenticator(JwtAuthenticator::hs256(jwt_secret))
        .build_layer();
    let router = Router::new()
        .route("/", get(|| async { "the host's own page" }))
        .layer(livechat);
    Ok((router, chat))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("JWT_SECRET")?;
    let (app, _chat) = app(secret.as_bytes(), "sqlite://embedded.db").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
