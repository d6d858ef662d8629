//! The wire client of `livechat-loadgen`, shared with the criterion pipeline bench.
//!
//! It speaks Engine.IO v4 / Socket.IO v5 over websockets itself, with no client
//! library, so that it stays cheap enough never to be the bottleneck: frames are
//! matched by prefix and only the fields a caller needs are read.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;

/// The websocket under a [`Client`].
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long [`next_text`] waits for a frame.
pub const FRAME_WAIT: Duration = Duration::from_secs(30);

/// A Socket.IO client on a raw websocket, connected to the default namespace.
#[derive(Debug)]
pub struct Client {
    /// The websocket, for callers that split it into a reader and a writer.
    pub ws: Ws,
}

impl Client {
    /// Opens a websocket to `url` (`http://host:port`) and connects to the default
    /// namespace with `token`; fails if the server refuses.
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<Self> {
        let ws_url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            url.replacen("http", "ws", 1)
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
            .await
            .with_context(|| format!("connecting to {ws_url}"))?;
        let open = next_text(&mut ws).await?;
        if !open.starts_with('0') {
            bail!("expected an Engine.IO open packet, got {open}");
        }
        ws.send(Frame::text(format!("40{}", json!({ "token": token }))))
            .await?;
        loop {
            let frame = next_text(&mut ws).await?;
            if frame.starts_with("40") {
                return Ok(Self { ws });
            }
            if frame.starts_with("44") {
                bail!("connect refused: {frame}");
            }
        }
    }

    /// Emits `event` with `payload`, asking for an ack with `id`.
    pub async fn emit_ack(&mut self, id: u64, event: &str, payload: Value) -> anyhow::Result<()> {
        self.ws
            .send(Frame::text(format!("42{id}{}", json!([event, payload]))))
            .await?;
        Ok(())
    }

    /// Reads until every ack in `ids` came, failing on a refusal (`ok` not true).
    /// Frames other than acks are dropped.
    pub async fn wait_acks(&mut self, ids: &[u64]) -> anyhow::Result<()> {
        let mut left: Vec<u64> = ids.to_vec();
        while !left.is_empty() {
            let frame = next_text(&mut self.ws).await?;
            if let Some((id, rest)) = ack_of(&frame) {
                if !rest.contains("\"ok\":true") {
                    bail!("request {id} refused: {rest}");
                }
                left.retain(|l| *l != id);
            }
        }
        Ok(())
    }
}

/// The next text frame, answering Engine.IO pings on the way; fails after
/// [`FRAME_WAIT`] without one, or when the connection closes.
pub async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        let frame = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .context("no frame within 30 s")?
            .context("connection closed")??;
        match frame {
            Frame::Text(t) if t.as_str() == "2" => ws.send(Frame::text("3")).await?,
            Frame::Text(t) => return Ok(t.to_string()),
            Frame::Close(_) => bail!("connection closed"),
            _ => {}
        }
    }
}

/// `43<id>[...]` → (id, the rest).
pub fn ack_of(frame: &str) -> Option<(u64, &str)> {
    let rest = frame.strip_prefix("43")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    Some((rest[..digits].parse().ok()?, &rest[digits..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_acks() {
        assert_eq!(
            super::ack_of("4312[{\"ok\":true}]"),
            Some((12, "[{\"ok\":true}]"))
        );
        assert_eq!(super::ack_of("42[\"x\"]"), None);
    }
}
