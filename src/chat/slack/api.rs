//! The Slack Web API calls opsbot makes, through slack-morphism's client, with
//! errors sorted into what the send queue does next: wait (429), retry (5xx,
//! network), or give up (a request Slack will never accept).

pub use crate::chat::outbound::ApiError;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use std::sync::Arc;

pub type Connector =
    SlackClientHyperConnector<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>;

impl From<SlackClientError> for ApiError {
    fn from(e: SlackClientError) -> Self {
        match e {
            SlackClientError::RateLimitError(r) => ApiError::RateLimited(r.retry_after),
            SlackClientError::HttpError(h) if h.status_code.is_server_error() => {
                ApiError::Transient(format!("HTTP {}", h.status_code))
            }
            SlackClientError::HttpError(h) => ApiError::Permanent(format!("HTTP {}", h.status_code)),
            SlackClientError::HttpProtocolError(p) => ApiError::Transient(p.to_string()),
            SlackClientError::ApiError(a) => ApiError::Permanent(a.code),
            // Slack took the call but its answer did not decode: retrying could
            // post the same message twice.
            SlackClientError::ProtocolError(p) => ApiError::Permanent(format!("unexpected answer: {p}")),
            other => ApiError::Transient(other.to_string()),
        }
    }
}

/// A Web API client bound to the bot token.
#[derive(Clone)]
pub struct SlackApi {
    client: Arc<SlackClient<Connector>>,
    token: SlackApiToken,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackApi(<token>)")
    }
}

/// Builds the HTTP connector: https to Slack, and plain http only when
/// `SLACK_API_URL` points at a local fake.
pub fn connector(api_url: Option<&str>) -> std::io::Result<Connector> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_native_roots()?;
    let https = match api_url {
        Some(url) if url.starts_with("http://") => builder.https_or_http().enable_http1().build(),
        _ => builder.https_only().enable_http1().enable_http2().build(),
    };
    let connector = SlackClientHyperConnector::with_connector(https);
    Ok(match api_url {
        Some(url) => connector.with_slack_api_url(url.trim_end_matches('/')),
        None => connector,
    })
}

impl SlackApi {
    pub fn new(token: &str, api_url: Option<&str>) -> std::io::Result<SlackApi> {
        let client = Arc::new(SlackClient::new(connector(api_url)?));
        Ok(SlackApi { client, token: SlackApiToken::new(token.to_string().into()) })
    }

    pub fn client(&self) -> Arc<SlackClient<Connector>> {
        self.client.clone()
    }

    fn content(text: &str, blocks: Option<&Value>) -> Result<SlackMessageContent, ApiError> {
        let mut content = SlackMessageContent::new().with_text(text.to_string());
        if let Some(blocks) = blocks {
            let blocks: Vec<SlackBlock> =
                serde_json::from_value(blocks.clone()).map_err(|e| ApiError::Permanent(format!("bad blocks: {e}")))?;
            content = content.with_blocks(blocks);
        }
        Ok(content)
    }

    /// `chat.postMessage`; returns the message's `ts`.
    pub async fn post(
        &self,
        channel: &str,
        thread: Option<&str>,
        text: &str,
        blocks: Option<&Value>,
    ) -> Result<String, ApiError> {
        let session = self.client.open_session(&self.token);
        let request = SlackApiChatPostMessageRequest::new(channel.to_string().into(), Self::content(text, blocks)?)
            .opt_thread_ts(thread.map(|t| t.to_string().into()));
        let response = session.chat_post_message(&request).await?;
        Ok(response.ts.to_string())
    }

    /// `chat.update`.
    pub async fn update(&self, channel: &str, ts: &str, text: &str, blocks: Option<&Value>) -> Result<(), ApiError> {
        let session = self.client.open_session(&self.token);
        let request = SlackApiChatUpdateRequest::new(
            channel.to_string().into(),
            Self::content(text, blocks)?,
            ts.to_string().into(),
        );
        session.chat_update(&request).await?;
        Ok(())
    }

    /// A private channel (`conversations.create`, scope `groups:write`):
    /// nobody sees an incident's channel who was not asked in, whatever the
    /// channel it was declared in. Then `conversations.invite` for
    /// `members`; returns the new channel's id. The channel made, an invite
    /// Slack refuses is logged, not an error.
    pub async fn open_channel(&self, name: &str, members: &[&str]) -> Result<String, ApiError> {
        let session = self.client.open_session(&self.token);
        let created = session
            .conversations_create(&SlackApiConversationsCreateRequest::new(name.to_string()).with_is_private(true))
            .await
            .map_err(|e| match ApiError::from(e) {
                ApiError::Permanent(code) if code == "missing_scope" => ApiError::Permanent(
                    "the Slack app lacks the groups:write scope: apply the manifest from `opsbot slack-manifest` again and reinstall".into(),
                ),
                ApiError::Permanent(code) if code == "name_taken" => {
                    ApiError::Permanent(format!("a channel named {name} exists already"))
                }
                other => other,
            })?;
        let id = created.channel.id;
        if !members.is_empty() {
            // Slack takes `users` as a comma-separated string (slack-morphism's
            // request would send an array).
            #[derive(serde::Serialize)]
            struct Invite<'a> {
                channel: &'a str,
                users: String,
            }
            let invite = Invite { channel: id.0.as_str(), users: members.join(",") };
            let answer: Result<SlackApiConversationsInviteResponse, _> =
                session.http_session_api.http_post("conversations.invite", &invite, None).await;
            if let Err(e) = answer {
                tracing::warn!(error = %ApiError::from(e), channel = %id, "inviting people to a new incident channel failed");
            }
        }
        Ok(id.to_string())
    }

    /// Uploads a file and shares it in `channel` (or the thread `thread`)
    /// with `comment` (scope `files:write`): `files.getUploadURLExternal`,
    /// the bytes to the URL it gives (no token: the URL is the credential),
    /// then `files.completeUploadExternal`.
    pub async fn upload(
        &self,
        channel: &str,
        thread: Option<&str>,
        filename: &str,
        bytes: &[u8],
        comment: &str,
    ) -> Result<(), ApiError> {
        let session = self.client.open_session(&self.token);
        let url = session
            .get_upload_url_external(&SlackApiFilesGetUploadUrlExternalRequest::new(filename.to_string(), bytes.len()))
            .await
            .map_err(|e| match ApiError::from(e) {
                ApiError::Permanent(code) if code == "missing_scope" => ApiError::Permanent(
                    "the Slack app lacks the files:write scope: apply the manifest from `opsbot slack-manifest` again and reinstall".into(),
                ),
                other => other,
            })?;
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Permanent(format!("cannot build an HTTP client: {e}")))?;
        let sent = client
            .post(url.upload_url.value().as_str())
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|_| ApiError::Transient("the file upload broke off".into()))?;
        if sent.status().is_server_error() {
            return Err(ApiError::Transient(format!("the file upload failed: HTTP {}", sent.status())));
        }
        if !sent.status().is_success() {
            return Err(ApiError::Permanent(format!("the file upload was refused: HTTP {}", sent.status())));
        }
        let request = SlackApiFilesCompleteUploadExternalRequest::new(vec![
            SlackApiFilesComplete::new(url.file_id).with_title(filename.to_string())
        ])
        .with_channel_id(channel.to_string().into())
        .with_initial_comment(comment.to_string())
        .opt_thread_ts(thread.map(|t| t.to_string().into()));
        session.files_complete_upload_external(&request).await?;
        Ok(())
    }

    /// `pins.add` (scope `pins:write`).
    pub async fn pin(&self, channel: &str, ts: &str) -> Result<(), ApiError> {
        let session = self.client.open_session(&self.token);
        let request = SlackApiPinsAddRequest::new(channel.to_string().into(), ts.to_string().into());
        session.pins_add(&request).await?;
        Ok(())
    }

    /// `chat.postEphemeral`: only `user` sees it.
    pub async fn ephemeral(&self, channel: &str, user: &str, thread: Option<&str>, text: &str) -> Result<(), ApiError> {
        let session = self.client.open_session(&self.token);
        let request = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user.to_string().into(),
            Self::content(text, None)?,
        )
        .opt_thread_ts(thread.map(|t| t.to_string().into()));
        session.chat_post_ephemeral(&request).await?;
        Ok(())
    }

    /// `users.info`: the name Slack shows for `user` (display name, else real
    /// name, else user name); `None` if the user has none of them.
    pub async fn display_name(&self, user: &str) -> Result<Option<String>, ApiError> {
        let session = self.client.open_session(&self.token);
        let response = session.users_info(&SlackApiUsersInfoRequest::new(user.to_string().into())).await?;
        let user = response.user;
        let profile = user.profile.as_ref();
        let candidates = [
            profile.and_then(|p| p.display_name.clone()),
            profile.and_then(|p| p.real_name.clone()),
            user.real_name.clone(),
            user.name.clone(),
        ];
        Ok(candidates.into_iter().flatten().map(|n| n.trim().to_string()).find(|n| !n.is_empty()))
    }
}
