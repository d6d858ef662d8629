//! [`LiveChatLayer`] and [`LiveChatService`]: thin wrappers over socketioxide's, so
//! that hosts depend on our types only.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryFutureExt;
use futures_util::future::{Either as EitherFuture, MapOk, Ready};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty, Full};
use socketioxide::layer::SocketIoLayer;
use socketioxide::service::SocketIoService;
use tower_layer::Layer;
use tower_service::Service;

/// The tower layer: serves `/socket.io` and passes every other request to the
/// wrapped service.
///
/// A request that opens an Engine.IO session (either transport) counts against its
/// client address's connection-attempt budget ([`crate::Limits::connect_rate_per_ip`],
/// with [`crate::PeerAddr`] set by the host) before anything is allocated for it; over
/// the budget it is answered `429 Too Many Requests` with `Retry-After`.
///
/// Memory per connected socket: the layer copies the request head out of hyper's
/// read buffer, because socketioxide keeps it for the socket's life. Anything else
/// that keeps a piece of the head keeps the whole buffer (8–16 KiB) alive too: with
/// axum's `Router::layer`, turn off axum's default `original-uri` feature, whose
/// `OriginalUri` extension is such a piece.
#[derive(Clone)]
pub struct LiveChatLayer {
    inner: SocketIoLayer,
    chat: crate::LiveChat,
}

impl std::fmt::Debug for LiveChatLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveChatLayer").finish_non_exhaustive()
    }
}

impl LiveChatLayer {
    pub(crate) fn new(inner: SocketIoLayer, chat: crate::LiveChat) -> Self {
        Self { inner, chat }
    }

    /// Wraps `inner`: the same as `Layer::layer`.
    pub fn service<S: Clone>(&self, inner: S) -> LiveChatService<S> {
        self.layer(inner)
    }
}

impl<S: Clone> Layer<S> for LiveChatLayer {
    type Service = LiveChatService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LiveChatService {
            inner: self.inner.layer(inner),
            chat: self.chat.clone(),
        }
    }
}

/// The tower service made by [`LiveChatLayer`].
pub struct LiveChatService<S: Clone> {
    inner: SocketIoService<S>,
    chat: crate::LiveChat,
}

impl<S: Clone> Clone for LiveChatService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            chat: self.chat.clone(),
        }
    }
}

impl<S: Clone> std::fmt::Debug for LiveChatService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveChatService").finish_non_exhaustive()
    }
}

/// The body of a [`LiveChatService`] response: socketioxide's, or a refusal's text.
pub type LiveChatBody<B> = Either<B, Full<Bytes>>;

type Answered<B> = fn(Response<B>) -> Response<LiveChatBody<B>>;

impl<S, ReqBody, B> Service<Request<ReqBody>> for LiveChatService<S>
where
    S: Clone,
    SocketIoService<S>: Service<Request<ReqBody>, Response = Response<B>>,
{
    type Response = Response<LiveChatBody<B>>;
    type Error = <SocketIoService<S> as Service<Request<ReqBody>>>::Error;
    type Future = EitherFuture<
        MapOk<<SocketIoService<S> as Service<Request<ReqBody>>>::Future, Answered<B>>,
        Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if !req.uri().path().starts_with(SOCKET_IO_PATH) {
            return EitherFuture::Left(self.inner.call(req).map_ok(left as Answered<B>));
        }
        if opens_a_session(req.uri())
            && let Err(refusal) = self.chat.admit_transport(&req)
        {
            return EitherFuture::Right(futures_util::future::ready(Ok(refused(refusal))));
        }
        EitherFuture::Left(
            self.inner
                .call(detach_head(req))
                .map_ok(left as Answered<B>),
        )
    }
}

fn left<B>(res: Response<B>) -> Response<LiveChatBody<B>> {
    res.map(Either::Left)
}

/// Whether an Engine.IO request opens a new session: it names none (`sid`).
fn opens_a_session(uri: &Uri) -> bool {
    !uri.query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.starts_with("sid="))
}

/// `429` for an address over its budget, `503` while the node drains; both tell
/// the client when to try again (socket.io-client retries with its own backoff).
fn refused<B>(refusal: crate::chat::SessionRefusal) -> Response<LiveChatBody<B>> {
    use crate::chat::SessionRefusal;
    let (status, text) = match refusal {
        SessionRefusal::Limit(r) => (StatusCode::TOO_MANY_REQUESTS, r.to_string()),
        SessionRefusal::Draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            crate::handlers::DRAINING.to_owned(),
        ),
    };
    let mut res = Response::new(Either::Right(Full::from(text)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// Where socketioxide serves Engine.IO (its default, which the builder keeps).
const SOCKET_IO_PATH: &str = "/socket.io";

/// Copies the request head out of the connection's read buffer.
///
/// hyper hands out header values and the URI as slices of the buffer it read the
/// request into (8–16 KiB), and engineioxide keeps the head of the request that opened
/// a socket for the socket's whole life. Without the copy every connected socket pins
/// that buffer: half of an idle connection's memory. The copy is a few hundred bytes.
fn detach_head<B>(req: Request<B>) -> Request<B> {
    let (mut head, body) = req.into_parts();
    for value in head.headers.values_mut() {
        if let Ok(mut owned) = HeaderValue::from_bytes(value.as_bytes()) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
    }
    if let Ok(uri) = Uri::try_from(head.uri.to_string()) {
        head.uri = uri;
    }
    Request::from_parts(head, body)
}

/// The fallback of a standalone service: 404 for everything that is not `/socket.io`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotFound;

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let mut res = Response::new(Empty::new());
        *res.status_mut() = StatusCode::NOT_FOUND;
        std::future::ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What hyper does: the head's parts are slices of one read buffer.
    fn request_sharing(buffer: &Bytes) -> Request<()> {
        let text = std::str::from_utf8(buffer).unwrap();
        let uri_at = text.find("/socket.io").unwrap();
        let uri_end = text[uri_at..].find(' ').unwrap() + uri_at;
        let token_at = text.find("Bearer").unwrap();
        let token_end = text[token_at..].find('\r').unwrap() + token_at;
        let mut value = HeaderValue::from_maybe_shared(buffer.slice(token_at..token_end)).unwrap();
        value.set_sensitive(true);
        Request::builder()
            .uri(Uri::from_maybe_shared(buffer.slice(uri_at..uri_end)).unwrap())
            .header("authorization", value)
            .body(())
            .unwrap()
    }

    fn inside(buffer: &Bytes, bytes: &[u8]) -> bool {
        let range = buffer.as_ptr_range();
        range.contains(&bytes.as_ptr())
    }

    #[test]
    fn the_head_of_a_socket_request_no_longer_points_into_the_read_buffer() {
        let mut raw = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\
            Authorization: Bearer abc.def\r\n\r\n"
            .to_vec();
        raw.resize(16 * 1024, 0);
        let buffer = Bytes::from(raw);
        let req = request_sharing(&buffer);
        let value = &req.headers()["authorization"];
        assert!(
            inside(&buffer, value.as_bytes()),
            "the setup shares the buffer"
        );
        assert!(inside(&buffer, req.uri().path().as_bytes()));

        let req = detach_head(req);
        let value = &req.headers()["authorization"];
        assert_eq!(value, "Bearer abc.def");
        assert!(value.is_sensitive(), "a secret stays marked as one");
        assert!(!inside(&buffer, value.as_bytes()));
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert!(!inside(&buffer, req.uri().path().as_bytes()));
        assert!(!inside(&buffer, req.uri().query().unwrap().as_bytes()));
    }
}
