//! Where the Hub is, where its cache lives, and who we are: the same environment variables as
//! Python's `huggingface_hub`, so a model downloaded by either is found by the other.

use std::path::{Path, PathBuf};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Settings read from the environment (see [`HubConfig::from_env`]).
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// `HF_ENDPOINT` (a mirror), without a trailing slash.
    pub endpoint: String,
    /// The cache root holding `models--ORG--NAME/` folders.
    pub cache_dir: PathBuf,
    /// `HF_TOKEN`, else the token file `huggingface-cli login` writes.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: use the cache only.
    pub offline: bool,
}

impl std::fmt::Debug for HubConfig {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .finish()
    }
}

/// huggingface_hub's `ENV_VARS_TRUE_VALUES`.
fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

/// `os.path.expanduser` for the forms that matter: `~` and `~/…`.
fn expand_home(p: &str, home: Option<&str>) -> PathBuf {
    match (p.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(p),
    }
}

impl HubConfig {
    /// Reads the process environment.
    pub fn from_env() -> HubConfig {
        HubConfig::from_vars(
            |k| std::env::var(k).ok(),
            |p| std::fs::read_to_string(p).ok(),
        )
    }

    /// Resolves the settings from `var` (an environment lookup) and `read` (reads the token
    /// file), following huggingface_hub's `constants.py`:
    /// - `HF_HOME` = `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - cache = `$HF_HUB_CACHE`, else the legacy `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`;
    /// - token = `$HF_TOKEN`, else the legacy `$HUGGING_FACE_HUB_TOKEN`, else the file
    ///   `$HF_TOKEN_PATH` (default `$HF_HOME/token`); blank means none;
    /// - offline = `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is 1/ON/YES/TRUE.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        read: impl Fn(&Path) -> Option<String>,
    ) -> HubConfig {
        let nonempty = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let home = var("HOME");
        let home = home.as_deref();
        let hf_home = match nonempty("HF_HOME") {
            Some(h) => expand_home(&h, home),
            None => {
                let xdg = nonempty("XDG_CACHE_HOME").unwrap_or_else(|| "~/.cache".into());
                expand_home(&xdg, home).join("huggingface")
            }
        };
        let cache_dir = nonempty("HF_HUB_CACHE")
            .or_else(|| nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(|p| expand_home(&p, home))
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_path = nonempty("HF_TOKEN_PATH")
            .map(|p| expand_home(&p, home))
            .unwrap_or_else(|| hf_home.join("token"));
        let token = nonempty("HF_TOKEN")
            .or_else(|| nonempty("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| read(&token_path))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let endpoint = nonempty("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let offline = is_true(var("HF_HUB_OFFLINE").as_deref())
            || is_true(var("TRANSFORMERS_OFFLINE").as_deref());
        HubConfig {
            endpoint,
            cache_dir,
            token,
            offline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)], token_file: Option<&str>) -> HubConfig {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(
            |k| vars.get(k).cloned(),
            |p| {
                assert!(p.ends_with("token"), "{}", p.display());
                token_file.map(str::to_string)
            },
        )
    }

    #[test]
    fn defaults_follow_huggingface_hub() {
        let c = cfg(&[("HOME", "/home/u")], None);
        assert_eq!(c.endpoint, "https://huggingface.co");
        assert_eq!(c.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
        assert_eq!(c.token, None);
        assert!(!c.offline);
        let c = cfg(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")], None);
        assert_eq!(c.cache_dir, Path::new("/x/huggingface/hub"));
    }

    #[test]
    fn variables_override() {
        let c = cfg(
            &[
                ("HOME", "/home/u"),
                ("HF_HOME", "~/hf"),
                ("HF_ENDPOINT", "http://127.0.0.1:9/"),
                ("HF_HUB_OFFLINE", "yes"),
            ],
            Some(" hf_file\n"),
        );
        assert_eq!(c.cache_dir, Path::new("/home/u/hf/hub"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("hf_file"));
        assert!(c.offline);
        let c = cfg(
            &[
                ("HF_HOME", "/h"),
                ("HF_HUB_CACHE", "/c"),
                ("HF_TOKEN", "hf_env"),
                ("HF_HUB_OFFLINE", "0"),
            ],
            Some("hf_file"),
        );
        assert_eq!(c.cache_dir, Path::new("/c"));
        assert_eq!(c.token.as_deref(), Some("hf_env"));
        assert!(!c.offline);
        let c = cfg(&[("HF_HOME", "/h"), ("HF_TOKEN", "  ")], Some("\n"));
        assert_eq!(c.token, None);
        assert!(!format!("{c:?}").contains("hf_"));
        let c = cfg(&[("HF_HOME", "/h"), ("HF_TOKEN", "hf_secret")], None);
        assert!(!format!("{c:?}").contains("hf_secret"));
    }
}
