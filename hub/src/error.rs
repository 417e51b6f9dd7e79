//! What can go wrong fetching a model, each with what to do about it.

use std::path::PathBuf;

use thiserror::Error;

/// Fetching a model from the Hub (or from its cache) failed.
#[derive(Debug, Error)]
pub enum HubError {
    #[error("'{input}' is not a Hub repo id: {message}")]
    BadRepoId { input: String, message: String },
    #[error("{repo}: the Hub refused access (HTTP {status}{}). {}", server_note(message), auth_hint(*token_sent, *status))]
    Unauthorized {
        repo: String,
        status: u16,
        message: Option<String>,
        token_sent: bool,
    },
    #[error("{what} not found on {endpoint} (HTTP 404{}){}", server_note(message), if *token_sent { "" } else { "; if the repo is private, set HF_TOKEN" })]
    NotFound {
        what: String,
        endpoint: String,
        message: Option<String>,
        token_sent: bool,
    },
    #[error("{url}: HTTP {status}{}", server_note(message))]
    Http {
        url: String,
        status: u16,
        message: Option<String>,
    },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: unexpected answer: {message}")]
    BadResponse { url: String, message: String },
    #[error("HF_HUB_OFFLINE is set and {message}; run once without HF_HUB_OFFLINE (or `huggingface-cli download {repo}`) to fill the cache")]
    Offline { repo: String, message: String },
    #[error("{repo}@{revision} has no safetensors weights (model*.safetensors){}", if found_bin.is_empty() { String::new() } else { format!("; it has only PyTorch pickles ({}), which ggforge does not load because they can run code", found_bin.join(", ")) })]
    NoWeights {
        repo: String,
        revision: String,
        found_bin: Vec<String>,
    },
    #[error("{file}: the download does not match the Hub's metadata: {message}")]
    Integrity { file: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interrupted; the partial download stays in the cache and is resumed next time")]
    Interrupted,
}

fn server_note(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

fn auth_hint(token_sent: bool, status: u16) -> &'static str {
    match (token_sent, status) {
        (false, _) => "The repo is gated or private: set HF_TOKEN to a token of an account that has access (for a gated model, accept its terms on the model page first)",
        (true, 403) => "The token works but does not grant access to this repo: for a gated model, accept its terms on the model page with this account",
        (true, _) => "The token (HF_TOKEN or the token file under HF_HOME) was refused: check that it is valid and has read access",
    }
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error is about what the user asked for (a repo, revision or file that does
    /// not exist or is not accessible, a cache miss offline) rather than a failure on the way.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            HubError::BadRepoId { .. }
                | HubError::Unauthorized { .. }
                | HubError::NotFound { .. }
                | HubError::Offline { .. }
                | HubError::NoWeights { .. }
        )
    }

    /// Whether a retry may help (network trouble or a server error).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            HubError::Network { .. } => true,
            HubError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
