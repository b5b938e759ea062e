//! Smoke tests: an HTTP GET with a timeout and retries, expecting a status and
//! optionally a body substring. A reusable step for any backend's rollout.

use crate::config::SmokeTest;
use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Most of a body read for the substring check.
const BODY_LIMIT: usize = 64 * 1024;

async fn get(url: &str) -> Result<(u16, String), String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
    let request = axum::http::Request::get(url)
        .header("user-agent", "opsbot-smoke-test")
        .body(Body::empty())
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let response = client.request(request).await.map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(Body::new(response.into_body()), BODY_LIMIT).await.unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// Runs the smoke test against `url`; Ok says what passed, Err what failed last.
pub async fn run(url: &str, spec: &SmokeTest) -> Result<String, String> {
    let attempts = spec.retries.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        match tokio::time::timeout(spec.timeout, get(url)).await {
            Ok(Ok((status, body)))
                if status == spec.expect_status
                    && spec.expect_body.as_ref().is_none_or(|b| body.contains(b.as_str())) =>
            {
                return Ok(format!("smoke test passed: {url} answered {status}"));
            }
            Ok(Ok((status, body))) => {
                let want = spec.expect_body.as_ref().map(|b| format!(" containing “{b}”")).unwrap_or_default();
                // A short, single-line excerpt: the body is the service's text, shown as data.
                let got: String = body.chars().filter(|c| !c.is_control()).take(80).collect();
                last = format!("answered {status} “{got}”, expected {}{want}", spec.expect_status);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {}", crate::clock::format_duration(spec.timeout)),
        }
        if attempt < attempts {
            tokio::time::sleep(spec.interval.min(Duration::from_secs(60))).await;
        }
    }
    Err(format!("smoke test of {url} failed after {attempts} attempt(s): {last}"))
}
