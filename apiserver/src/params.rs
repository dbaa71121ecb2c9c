//! Query parameters: `dryRun`, `watch`, `resourceVersion`, label and field selectors, read
//! without axum's plain-text rejections so every bad parameter is a `Status` 400.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use kohakuriver_api::field_validation::FieldValidation;
use kohakuriver_api::{FieldSelector, LabelSelector, Selectable};

use crate::admission::Served;
use crate::error::AppError;

/// The query string of a request.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Params, AppError> {
        Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| AppError::bad_request(format!("invalid query string: {e}")))
    }
}

impl Params {
    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `dryRun=All`: validate and admit, store nothing.
    pub fn dry_run(&self) -> Result<bool, AppError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(AppError::bad_request(format!(
                "dryRun={other:?} is not supported; use dryRun=All"
            ))),
        }
    }

    /// `fieldValidation=Strict|Warn|Ignore`, Strict when absent.
    pub fn field_validation(&self) -> Result<FieldValidation, AppError> {
        FieldValidation::parse(self.get("fieldValidation")).map_err(AppError::bad_request)
    }

    /// The field manager of a write: `fieldManager`, else the User-Agent up to its first
    /// `/` as kube-apiserver derives it (`kubectl`, `kohakuriver`), else `unknown`.
    pub fn field_manager(&self, headers: &HeaderMap) -> Result<String, AppError> {
        if let Some(manager) = self.get("fieldManager").filter(|m| !m.is_empty()) {
            if manager.len() > 128 || manager.chars().any(char::is_control) {
                return Err(AppError::bad_request(format!(
                    "fieldManager={manager:?} is not valid: at most 128 printable characters"
                )));
            }
            return Ok(manager.to_string());
        }
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let prefix: String = agent
            .split('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect();
        Ok(if prefix.trim().is_empty() {
            "unknown".to_string()
        } else {
            prefix
        })
    }

    /// A boolean flag: `true`/`1` or `false`/`0`, absent meaning false.
    pub fn flag(&self, key: &str) -> Result<bool, AppError> {
        match self.get(key) {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(AppError::bad_request(format!(
                "{key}={other:?} is not a boolean; use true or false"
            ))),
        }
    }

    /// A boolean flag whose absence means "not said" (`None`).
    pub fn optional_flag(&self, key: &str) -> Result<Option<bool>, AppError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(_) => self.flag(key).map(Some),
        }
    }

    /// A non-negative integer parameter.
    pub fn number(&self, key: &str) -> Result<Option<u64>, AppError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                AppError::bad_request(format!("{key}={v:?} is not a non-negative integer"))
            }),
        }
    }

    /// The label and field selectors for kind `R`, each at most [`MAX_SELECTOR_BYTES`].
    pub fn selection<R: Served>(&self) -> Result<Selection, AppError> {
        let labels = self.selector("labelSelector")?;
        let fields = self.selector("fieldSelector")?;
        let labels = LabelSelector::parse(labels).map_err(AppError::bad_request)?;
        let fields = FieldSelector::parse::<R>(fields).map_err(AppError::bad_request)?;
        Ok(Selection { labels, fields })
    }
}

impl Params {
    /// A selector parameter's text, refused (400) past [`MAX_SELECTOR_BYTES`]: every
    /// watcher evaluates its selector on every event, so its size is work for the server.
    fn selector(&self, key: &str) -> Result<&str, AppError> {
        let text = self.get(key).unwrap_or_default();
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(AppError::bad_request(format!(
                "{key} is {} bytes, over the limit of {MAX_SELECTOR_BYTES} bytes; select with fewer or shorter requirements",
                text.len()
            )));
        }
        Ok(text)
    }
}

/// The longest accepted `labelSelector` or `fieldSelector`, in bytes (4 KiB).
pub const MAX_SELECTOR_BYTES: usize = 4096;

/// Which objects a list or watch wants.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The label selector.
    pub labels: LabelSelector,
    /// The field selector.
    pub fields: FieldSelector,
}

impl Selection {
    /// True when every object matches.
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.requirements.is_empty()
    }

    /// The `status.node` and `status.phase` values required, which let the store read
    /// through its indexes.
    pub fn index_hints(&self) -> (Option<String>, Option<String>) {
        let hint = |path| self.fields.equality(path).map(str::to_string);
        (hint("status.node"), hint("status.phase"))
    }

    /// True when the object matches, judged by what selectors see of it when that was
    /// extracted already (a live watch event), and by its stored JSON `body` otherwise.
    pub fn matches_state<R: Served>(&self, body: &str, fields: Option<&Selectable>) -> bool {
        match fields {
            Some(fields) => fields.matches(&self.labels, &self.fields),
            None => self.matches::<R>(body),
        }
    }

    /// True when the stored JSON `body` of a kind-`R` object matches.
    pub fn matches<R: Served>(&self, body: &str) -> bool {
        if self.is_everything() {
            return true;
        }
        match serde_json::from_str::<R>(body) {
            Ok(object) => {
                self.labels.matches(&object.metadata().labels) && self.fields.matches(&object)
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::Task;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn reads_flags_and_numbers() {
        assert!(params(&[("dryRun", "All")]).dry_run().unwrap());
        assert_eq!(
            params(&[("dryRun", "yes")]).dry_run().unwrap_err().0.code,
            400
        );
        assert!(params(&[("watch", "true")]).flag("watch").unwrap());
        assert_eq!(
            params(&[("resourceVersion", "12")])
                .number("resourceVersion")
                .unwrap(),
            Some(12)
        );
        assert!(
            params(&[("resourceVersion", "x")])
                .number("resourceVersion")
                .is_err()
        );
    }

    #[test]
    fn selection_matches_stored_bodies_and_gives_hints() {
        let s = params(&[
            ("fieldSelector", "status.node=n1"),
            ("labelSelector", "team=a"),
        ])
        .selection::<Task>()
        .unwrap();
        assert_eq!(s.index_hints(), (Some("n1".into()), None));
        let mut t = Task::test("a").bound("n1", "0", &[]);
        t.metadata.labels.insert("team".into(), "a".into());
        assert!(s.matches::<Task>(&serde_json::to_string(&t).unwrap()));
        t.status.node = Some("n2".into());
        assert!(!s.matches::<Task>(&serde_json::to_string(&t).unwrap()));
        let e = params(&[("fieldSelector", "spec.image=x")])
            .selection::<Task>()
            .unwrap_err();
        assert_eq!(e.0.code, 400);
    }
}
