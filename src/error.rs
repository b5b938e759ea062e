//! The crate's error type, and the one place that turns any error into the
//! text a user reads. Internal details (paths, store errors) are logged, not
//! shown; the user gets what to do next.

use crate::action::ActionError;
use crate::approval::VoteRefusal;
use crate::audit::AuditError;
use crate::command::ParseError;
use crate::config::Problems;
use crate::engine::reply::ChatError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("denied: {0}")]
    Denied(String),
    /// Well-formed but not possible for this service (e.g. replicas out of bounds).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Vote(#[from] VoteRefusal),
    #[error("no request {0}")]
    UnknownRequest(String),
    #[error("{service} is busy with {request_id} (by {holder}); try again when it finishes")]
    Busy { service: String, request_id: String, holder: String },
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Config(#[from] Problems),
    #[error("{0}")]
    Io(String),
    /// A refusal or failure whose outcome is already in the trail, or could
    /// not be written (an alert button's command refused under its own
    /// gates, a silence that did not take): told as the inner error, never
    /// recorded a second time.
    #[error("{0}")]
    Recorded(Box<Error>),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl Error {
    /// What the user is told.
    pub fn user_message(&self) -> String {
        match self {
            Error::Parse(e) => e.to_string(),
            Error::Denied(reason) => format!("⛔ Denied: {reason}."),
            Error::Invalid(problem) => format!("{problem}."),
            Error::Vote(refusal) => format!("Vote not counted: {refusal}."),
            Error::UnknownRequest(id) => format!("There is no request {id}. `/audit` lists recent ones."),
            Error::Busy { .. } => format!("⏳ {self}."),
            Error::Action(e) => format!("The action failed: {e}."),
            // Storage problems are never detailed in chat: they may name paths.
            Error::Store(_) | Error::Audit(_) => {
                "opsbot could not record this in its audit trail, so nothing was done. An operator has been alerted in the logs.".into()
            }
            Error::Chat(_) => "opsbot could not deliver a message.".into(),
            Error::Config(_) => "opsbot's configuration is invalid; run `opsbot check`.".into(),
            Error::Io(_) => "opsbot hit an internal error; see its logs.".into(),
            Error::Recorded(inner) => inner.user_message(),
        }
    }

    /// The audit trail's end is not one a crash leaves (see `audit repair`).
    pub fn is_damaged_trail(&self) -> bool {
        matches!(
            self,
            Error::Audit(AuditError::Damaged(_))
                | Error::Store(crate::store::StoreError::Audit(AuditError::Damaged(_)))
        )
    }

    /// Whether this is the user's doing (logged at debug) or the bot's (error).
    pub fn is_internal(&self) -> bool {
        match self {
            Error::Recorded(inner) => inner.is_internal(),
            other => {
                matches!(other, Error::Store(_) | Error::Audit(_) | Error::Chat(_) | Error::Config(_) | Error::Io(_))
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
