//! The console's HTTP API and pages (docs/proxy.md lists every route).

use std::sync::Arc;

use hyper::StatusCode;
use zenith_utils::api::console::{DatabaseInfo, EndpointCreateRequest, RoleCreateRequest};
use zenith_utils::auth::{JwtAuth, Scope};
use zenith_utils::http::{json_response, text_response, ApiError, ApiRequest, HttpConf, Router};

use super::{page, Console, ConsoleError};

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> ApiError {
        match e {
            ConsoleError::NotFound(m) => ApiError::NotFound(m),
            ConsoleError::BadRequest(m) => ApiError::BadRequest(m),
            ConsoleError::Conflict(m) => ApiError::Conflict(m),
            ConsoleError::Internal(e) => ApiError::Internal(e),
        }
    }
}

fn body<T: serde::de::DeserializeOwned>(req: &ApiRequest, what: &str) -> Result<T, ApiError> {
    req.json()?
        .ok_or_else(|| ApiError::BadRequest(format!("a {what} body is required")))
}

fn ok() -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, ApiError> {
    Ok(json_response(StatusCode::OK, &serde_json::json!({})))
}

/// The link-auth page (what the proxy's notice tells a person to open).
const LINK_PAGE: &str = "/psql_session/{session_id}";

/// The console's API; with `auth`, every route but the link page, `/metrics`
/// and `/v1/status` needs a `controlplane` token.
pub fn router(auth: Option<Arc<JwtAuth>>) -> Router<Console> {
    Router::new("console", env!("CARGO_PKG_VERSION"), HttpConf::default())
        .with_auth(auth, |_, claims| claims.check_scope(Scope::ControlPlane))
        // The link page is what a person's browser opens.
        .public(&[LINK_PAGE])
        .get("/v1/endpoints", |c: Arc<Console>, _req| async move {
            Ok(json_response(StatusCode::OK, &c.list().await?))
        })
        .post("/v1/endpoints", |c: Arc<Console>, req| async move {
            let r: EndpointCreateRequest = body(&req, "EndpointCreateRequest")?;
            Ok(json_response(StatusCode::CREATED, &c.create(r).await?))
        })
        .get(
            "/v1/endpoints/{endpoint}",
            |c: Arc<Console>, req| async move {
                let ep = c.endpoint(req.param("endpoint")?)?;
                Ok(json_response(StatusCode::OK, &c.info(&ep).await?))
            },
        )
        .delete(
            "/v1/endpoints/{endpoint}",
            |c: Arc<Console>, req| async move {
                c.delete(req.param("endpoint")?).await?;
                ok()
            },
        )
        .get(
            "/v1/endpoints/{endpoint}/roles",
            |c: Arc<Console>, req| async move {
                let ep = c.endpoint(req.param("endpoint")?)?;
                let names: Vec<&str> = ep.roles.iter().map(|r| r.name.as_str()).collect();
                Ok(json_response(StatusCode::OK, &names))
            },
        )
        .post(
            "/v1/endpoints/{endpoint}/roles",
            |c: Arc<Console>, req| async move {
                let r: RoleCreateRequest = body(&req, "RoleCreateRequest")?;
                c.create_role(req.param("endpoint")?, &r.name, &r.password)
                    .await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &serde_json::json!({"name": r.name}),
                ))
            },
        )
        .delete(
            "/v1/endpoints/{endpoint}/roles/{role}",
            |c: Arc<Console>, req| async move {
                c.delete_role(req.param("endpoint")?, req.param("role")?)
                    .await?;
                ok()
            },
        )
        .get(
            "/v1/endpoints/{endpoint}/databases",
            |c: Arc<Console>, req| async move {
                Ok(json_response(
                    StatusCode::OK,
                    &c.databases(req.param("endpoint")?).await?,
                ))
            },
        )
        .post(
            "/v1/endpoints/{endpoint}/databases",
            |c: Arc<Console>, req| async move {
                let d: DatabaseInfo = body(&req, "DatabaseInfo")?;
                c.create_database(req.param("endpoint")?, &d).await?;
                Ok(json_response(StatusCode::CREATED, &d))
            },
        )
        .delete(
            "/v1/endpoints/{endpoint}/databases/{database}",
            |c: Arc<Console>, req| async move {
                c.delete_database(req.param("endpoint")?, req.param("database")?)
                    .await?;
                ok()
            },
        )
        .get(
            "/v1/proxy/endpoints/{endpoint}/roles/{role}",
            |c: Arc<Console>, req| async move {
                let s = c.role_secret(req.param("endpoint")?, req.param("role")?)?;
                Ok(json_response(StatusCode::OK, &s))
            },
        )
        .post(
            "/v1/proxy/endpoints/{endpoint}/wake",
            |c: Arc<Console>, req| async move {
                Ok(json_response(
                    StatusCode::OK,
                    &c.wake(req.param("endpoint")?).await?,
                ))
            },
        )
        .get(LINK_PAGE, |c: Arc<Console>, req| async move {
            let id = req.param("session_id")?.to_string();
            Ok(match c.link_session(&id).await {
                Ok(s) => text_response(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page::session_page(&id, &s.endpoint, &s.user, &s.dbname),
                ),
                Err(e) => error_page(e),
            })
        })
        .post(LINK_PAGE, |c: Arc<Console>, req| async move {
            let form = String::from_utf8_lossy(&req.body).into_owned();
            let create = page::form_field(&form, "create").as_deref() == Some("on");
            let session = req.param("session_id")?.to_string();
            Ok(match c.approve_link(&session, create).await {
                Ok(()) => text_response(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page::approved_page(),
                ),
                Err(e) => error_page(e),
            })
        })
}

fn error_page(e: ConsoleError) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let api: ApiError = e.into();
    text_response(
        api.status(),
        "text/html; charset=utf-8",
        page::error_page(&api.to_string()),
    )
}
