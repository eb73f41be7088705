//! `Router::with_auth`: 401 without a valid token, 403 when the policy
//! refuses, the handler when it allows; `/v1/status` and `/metrics` open.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use zenith_utils::auth::{generate_key_pair, Claims, JwtAuth, Scope, TokenIssuer};
use zenith_utils::http::{json_response, Router};
use zenith_utils::id::TenantId;

fn router(auth: Arc<JwtAuth>) -> Router<()> {
    Router::new("http_auth_test", "test", Default::default())
        .get("/v1/tenant/{tenant_id}", |_, _| async {
            Ok(json_response(StatusCode::OK, &"ok"))
        })
        .with_auth(Some(auth), |route, claims| match route.param("tenant_id") {
            Some(t) => {
                claims.check_tenant(t.parse().map_err(|_| {
                    zenith_utils::auth::AuthError::Forbidden("bad tenant id".into())
                })?)
            }
            None => claims.check_scope(Scope::PageServerApi),
        })
}

async fn call(r: &Router<()>, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().method(Method::GET).uri(path);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = r
        .handle(Arc::new(()), req.body(Full::new(Bytes::new())).unwrap())
        .await;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tokens_gate_routes() {
    let (private, public) = generate_key_pair().unwrap();
    let issuer = TokenIssuer::from_pem(private.as_bytes()).unwrap();
    let r = router(Arc::new(JwtAuth::from_pem(public.as_bytes()).unwrap()));
    let a: TenantId = "0a".repeat(16).parse().unwrap();
    let b: TenantId = "0b".repeat(16).parse().unwrap();
    let ta = issuer.issue(&Claims::new(Scope::Tenant, Some(a))).unwrap();
    let api = issuer
        .issue(&Claims::new(Scope::PageServerApi, None))
        .unwrap();

    assert_eq!(call(&r, "/v1/status", None).await.0, StatusCode::OK);
    assert_eq!(call(&r, "/metrics", None).await.0, StatusCode::OK);
    let (status, body) = call(&r, &format!("/v1/tenant/{a}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = r
        .handle(
            Arc::new(()),
            Request::get(format!("/v1/tenant/{a}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert!(body.contains("no token"), "{body}");
    let (status, body) = call(&r, &format!("/v1/tenant/{a}"), Some("garbage")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("malformed token"), "{body}");
    assert_eq!(
        call(&r, &format!("/v1/tenant/{a}"), Some(&ta)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&r, &format!("/v1/tenant/{a}"), Some(&api)).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&r, &format!("/v1/tenant/{b}"), Some(&ta)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("permission denied"), "{body}");
    // Unknown paths stay 404 whatever the token.
    assert_eq!(call(&r, "/v1/nope", None).await.0, StatusCode::NOT_FOUND);
}
