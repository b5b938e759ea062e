//! A runbook's `http` step: one configured request (a Datadog event, say),
//! its body from the runbook file, the API key from the environment, and
//! the response status checked. Nothing typed in chat reaches the URL or a
//! header; parameters reach only the body's strings.

use super::ActionError;
use crate::config::targets::HttpTarget;

/// Sends `body` to `target`; the text says what came back (the status and
/// the start of the body, never the key).
pub async fn send(name: &str, target: &HttpTarget, body: Option<&serde_json::Value>) -> Result<String, ActionError> {
    let client = reqwest::Client::builder()
        .timeout(target.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ActionError::Failed(format!("cannot build an HTTP client: {e}")))?;
    let method = if target.method == "PUT" { reqwest::Method::PUT } else { reqwest::Method::POST };
    let mut request = client.request(method, &target.url).header("user-agent", "opsbot");
    if let (Some(var), Some(header)) = (&target.api_key_env, &target.api_key_header) {
        let key = std::env::var(var).ok().filter(|k| !k.is_empty()).ok_or_else(|| {
            ActionError::Failed(format!("http `{name}`: the environment variable {var} is not set; nothing was sent"))
        })?;
        request = request.header(header.as_str(), key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| {
        // Not connected: nothing was sent. Anything after (a timeout, a
        // reset): it may have been received.
        if e.is_connect() {
            ActionError::Unreachable(format!("http `{name}`: cannot reach {}: {}", target.url, without_url(&e)))
        } else if e.is_timeout() {
            ActionError::Unknown(format!(
                "http `{name}`: no answer within {}; it may have been received",
                crate::clock::format_duration(target.timeout)
            ))
        } else {
            ActionError::Unknown(format!(
                "http `{name}`: the request to {} broke off ({}); it may have been received",
                target.url,
                without_url(&e)
            ))
        }
    })?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let shown: String = text.chars().take(200).filter(|c| !c.is_control()).collect();
    let ok = if target.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        target.expect_status.contains(&status)
    };
    if ok {
        Ok(format!("{} {} answered {status}", target.method, target.url))
    } else {
        Err(ActionError::Failed(format!(
            "{} {} answered {status}: {}",
            target.method,
            target.url,
            crate::engine::reply::typed(&shown)
        )))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the target");
    }
    text
}
