//! livechat served by bare hyper, without any router.
//!
//! Run: `JWT_SECRET=<32+ bytes> cargo run -p livechat-examples --example hyper`

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use livechat_core::auth::JwtAuthenticator;
use livechat_core::{LiveChat, LiveChatService, NotFound};
use tokio::net::TcpListener;

/// The standalone service (404 outside `/socket.io`), in memory.
pub(crate) fn service(jwt_secret: &[u8]) -> (LiveChatService<NotFound>, LiveChat) {
    LiveChat::builder()
        .authenticator(JwtAuthenticator::hs256(jwt_secret))
        .build_svc()
}

/// Accepts connections forever; upgrades are needed for websockets.
pub(crate) async fn serve(
    listener: TcpListener,
    svc: LiveChatService<NotFound>,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let svc = TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("JWT_SECRET")?;
    let (svc, _chat) = service(secret.as_bytes());
    serve(TcpListener::bind("127.0.0.1:3002").await?, svc).await
}
