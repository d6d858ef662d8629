//! [`LiveChatLayer`] and [`LiveChatService`]: thin wrappers over socketioxide's, so
//! that hosts depend on our types only.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use socketioxide::layer::SocketIoLayer;
use socketioxide::service::SocketIoService;
use tower_layer::Layer;
use tower_service::Service;

/// The tower layer: serves `/socket.io` and passes every other request to the
/// wrapped service.
#[derive(Clone)]
pub struct LiveChatLayer {
    inner: SocketIoLayer,
}

impl std::fmt::Debug for LiveChatLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveChatLayer").finish_non_exhaustive()
    }
}

impl LiveChatLayer {
    pub(crate) fn new(inner: SocketIoLayer) -> Self {
        Self { inner }
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
        }
    }
}

/// The tower service made by [`LiveChatLayer`].
pub struct LiveChatService<S: Clone> {
    inner: SocketIoService<S>,
}

impl<S: Clone> Clone for LiveChatService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Clone> std::fmt::Debug for LiveChatService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveChatService").finish_non_exhaustive()
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for LiveChatService<S>
where
    S: Clone,
    SocketIoService<S>: Service<Request<ReqBody>>,
{
    type Response = <SocketIoService<S> as Service<Request<ReqBody>>>::Response;
    type Error = <SocketIoService<S> as Service<Request<ReqBody>>>::Error;
    type Future = <SocketIoService<S> as Service<Request<ReqBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.inner.call(req)
    }
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
