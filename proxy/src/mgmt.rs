//! The proxy's HTTP API: `/metrics` and `/v1/status` (every router has
//! them), `GET /v1/link_sessions/{session_id}` (what a waiting link-auth
//! client asked for) and `POST /v1/link_sessions/{session_id}` by which the
//! console approves it.

use std::sync::Arc;

use hyper::StatusCode;
use zenith_utils::api::console::LinkApproval;
use zenith_utils::auth::{JwtAuth, Scope};
use zenith_utils::http::{json_response, ApiError, HttpConf, Router};

use crate::state::ProxyState;

/// With `auth`, the link-session routes need a `controlplane` token.
pub fn router(auth: Option<Arc<JwtAuth>>) -> Router<ProxyState> {
    Router::new("proxy", env!("CARGO_PKG_VERSION"), HttpConf::default())
        .with_auth(auth, |_, claims| claims.check_scope(Scope::ControlPlane))
        .get(
            "/v1/link_sessions/{session_id}",
            |s: Arc<ProxyState>, req| async move {
                let id = req.param("session_id")?;
                match s.links.get(id) {
                    Some(session) => Ok(json_response(StatusCode::OK, &session)),
                    None => Err(ApiError::NotFound(format!(
                        "no client waits for link session {id:?} (it timed out or disconnected)"
                    ))),
                }
            },
        )
        .post(
            "/v1/link_sessions/{session_id}",
            |s: Arc<ProxyState>, req| async move {
                let id = req.param("session_id")?.to_string();
                let approval: LinkApproval = req.json()?.ok_or_else(|| {
                    ApiError::BadRequest("a LinkApproval body is required".into())
                })?;
                if s.links.approve(&id, approval) {
                    Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({"session_id": id}),
                    ))
                } else {
                    Err(ApiError::NotFound(format!(
                        "no client waits for link session {id:?} as that role and database (it timed out or disconnected)"
                    )))
                }
            },
        )
}
