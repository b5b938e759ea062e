//! A proxy on 127.0.0.1 in front of moto (or the scripted ECS API) that can
//! fail, slow down, or lose the answer to the n-th call of one AWS action —
//! after passing it on (the change is made, the caller learns nothing
//! certain) or instead of it — and fail every call of an action once another
//! has been seen. Errors are answered in the caller's protocol: JSON
//! (`x-amz-target`, ECS) or the query protocol's XML (ELBv2). Everything
//! else passes through unchanged. `aws_fault_probe.py` proves with boto3
//! that the errors read as AWS's own.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
enum Kind {
    /// Answer this error instead of passing the call on.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Pass the call on (it takes effect), then answer this error.
    LandThenError {
        status: u16,
        code: String,
        message: String,
    },
    /// Pass the call on, then answer 200 with only half of the body.
    Truncate,
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Fault {
    action: String,
    skip: u32,
    kind: Kind,
    /// Every call hits, not just one.
    every: bool,
    /// Only once this action has been called this many times.
    after: Option<(String, usize)>,
}

#[derive(Default)]
struct Rules {
    faults: Vec<Fault>,
    calls: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    rules: Arc<Mutex<Rules>>,
}

pub struct AwsProxy {
    pub url: String,
    rules: Arc<Mutex<Rules>>,
    _runtime: tokio::runtime::Runtime,
}

impl AwsProxy {
    pub fn start(upstream: &str) -> AwsProxy {
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shared = Shared { upstream: upstream.to_string(), rules: rules.clone() };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let app = axum::Router::new().fallback(forward).with_state(shared);
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        AwsProxy { url, rules, _runtime: runtime }
    }

    fn add(&self, action: &str, n: u32, kind: Kind) {
        let fault = Fault { action: action.into(), skip: n - 1, kind, every: false, after: None };
        self.rules.lock().unwrap().faults.push(fault);
    }

    /// Fails the `n`-th call of `action` from now with an AWS error.
    pub fn fail_nth(&self, action: &str, n: u32, status: u16, code: &str, message: &str) {
        self.add(action, n, Kind::Error { status, code: code.into(), message: message.into() });
    }

    /// Passes the `n`-th call of `action` on (AWS applies it), then answers
    /// an error: the caller cannot tell whether it took effect.
    pub fn land_then_fail_nth(&self, action: &str, n: u32, status: u16, code: &str, message: &str) {
        self.add(action, n, Kind::LandThenError { status, code: code.into(), message: message.into() });
    }

    /// Passes the `n`-th call of `action` on, then answers 200 with half its body.
    pub fn truncate_nth(&self, action: &str, n: u32) {
        self.add(action, n, Kind::Truncate);
    }

    /// Passes the `n`-th call of `action` on at once, answers it after `delay`.
    pub fn slow_nth(&self, action: &str, n: u32, delay: Duration) {
        self.add(action, n, Kind::Slow(delay));
    }

    /// Fails every call of `action` once `after` has been called.
    pub fn fail_after(&self, after: &str, action: &str, status: u16, code: &str, message: &str) {
        self.fail_after_nth(after, 1, action, status, code, message);
    }

    /// Fails every call of `action` once `after` has been called `n` times.
    pub fn fail_after_nth(&self, after: &str, n: usize, action: &str, status: u16, code: &str, message: &str) {
        let kind = Kind::Error { status, code: code.into(), message: message.into() };
        let fault = Fault { action: action.into(), skip: 0, kind, every: true, after: Some((after.into(), n)) };
        self.rules.lock().unwrap().faults.push(fault);
    }

    /// The actions called so far.
    pub fn calls(&self) -> Vec<String> {
        self.rules.lock().unwrap().calls.clone()
    }
}

/// The action a request calls: JSON protocols name it in `x-amz-target`,
/// the query protocol in the form body's `Action`.
fn action_of(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or("").to_string();
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    form.into_iter().find(|(k, _)| k == "Action").map(|(_, v)| v).unwrap_or_default()
}

fn error(json: bool, status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    if json {
        let body = serde_json::json!({"__type": code, "message": message}).to_string();
        (status, [("content-type", "application/x-amz-json-1.1")], body).into_response()
    } else {
        let body = format!(
            "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>7e3c-fault</RequestId></ErrorResponse>"
        );
        (status, [("content-type", "text/xml")], body).into_response()
    }
}

/// Records the call; the fault it hits, if any (a one-off fault is used up).
fn due_fault(rules: &Mutex<Rules>, action: &str) -> Option<Kind> {
    let mut rules = rules.lock().unwrap();
    rules.calls.push(action.to_string());
    let calls = rules.calls.clone();
    let due = |f: &Fault| {
        f.action == action && f.after.as_ref().is_none_or(|(a, n)| calls.iter().filter(|c| *c == a).count() >= *n)
    };
    let mut hit = None;
    for (i, fault) in rules.faults.iter_mut().enumerate().filter(|(_, f)| due(f)) {
        if fault.skip > 0 {
            fault.skip -= 1;
        } else if hit.is_none() {
            hit = Some(i);
        }
    }
    hit.map(|i| if rules.faults[i].every { rules.faults[i].kind.clone() } else { rules.faults.remove(i).kind })
}

async fn forward(State(s): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let action = action_of(&headers, &body);
    let fault = due_fault(&s.rules, &action);
    let json = headers.contains_key("x-amz-target");
    if let Some(Kind::Error { status, code, message }) = &fault {
        return error(json, *status, code, message);
    }
    let url = format!("{}{}", s.upstream, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let answer = tokio::task::spawn_blocking(move || {
        let mut request = ureq::request(method.as_str(), &url);
        for (name, value) in &headers {
            if !["host", "content-length", "connection", "transfer-encoding"].contains(&name.as_str()) {
                request = request.set(name.as_str(), value.to_str().unwrap_or(""));
            }
        }
        let response = match request.send_bytes(&body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return (502, vec![], e.to_string().into_bytes()),
        };
        let status = response.status();
        let headers: Vec<(String, String)> = response
            .headers_names()
            .into_iter()
            .filter(|n| !["content-length", "connection", "transfer-encoding"].contains(&n.as_str()))
            .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut bytes = Vec::new();
        let _ = response.into_reader().read_to_end(&mut bytes);
        (status, headers, bytes)
    })
    .await
    .unwrap();
    let (status, headers, bytes) = answer;
    match fault {
        Some(Kind::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Kind::LandThenError { status, code, message }) => return error(json, status, &code, &message),
        Some(Kind::Truncate) => {
            let half = bytes[..bytes.len() / 2].to_vec();
            let kind = if json { "application/x-amz-json-1.1" } else { "text/xml" };
            return (StatusCode::OK, [("content-type", kind)], half).into_response();
        }
        _ => {}
    }
    let mut response = (StatusCode::from_u16(status).unwrap(), bytes).into_response();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::try_from(name), axum::http::HeaderValue::try_from(value))
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
