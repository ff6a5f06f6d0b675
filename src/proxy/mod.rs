//! The managed path: `POST /v1/responses`.
//!
//! Until the pipeline lands this passes the request through unchanged.

pub mod request;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::App;
use crate::error::ProxyError;
use crate::http::body::Body;

/// Serves `POST /v1/responses`.
pub async fn responses(app: &App, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    crate::http::routes::passthrough(app, ([127, 0, 0, 1], 0).into(), req).await
}
