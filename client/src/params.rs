//! Query parameters of list, watch, apply and log requests.

/// Which objects a list or watch returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListParams {
    /// A label selector such as `team=vision,tier!=batch`.
    pub label_selector: Option<String>,
    /// A field selector such as `status.node=n1,status.phase=Running`.
    pub field_selector: Option<String>,
    /// At most this many items (a page); the answer's `metadata.continue` asks for the
    /// next. `None` or 0: all of them. [`crate::Api::list_pages`] follows the pages.
    pub limit: Option<u64>,
    /// The `metadata.continue` token of the previous page.
    pub continue_token: Option<String>,
}

impl ListParams {
    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: &str) -> ListParams {
        self.label_selector = Some(selector.to_string());
        self
    }

    /// Only objects whose fields match `selector`.
    pub fn fields(mut self, selector: &str) -> ListParams {
        self.field_selector = Some(selector.to_string());
        self
    }

    /// Pages of at most `limit` items.
    pub fn limit(mut self, limit: u64) -> ListParams {
        self.limit = Some(limit);
        self
    }

    /// The selectors (and page) as query pairs; empty ones are left out.
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = self.label_selector.as_deref().filter(|s| !s.is_empty()) {
            q.push(("labelSelector", s.to_string()));
        }
        if let Some(s) = self.field_selector.as_deref().filter(|s| !s.is_empty()) {
            q.push(("fieldSelector", s.to_string()));
        }
        if let Some(limit) = self.limit.filter(|l| *l > 0) {
            q.push(("limit", limit.to_string()));
        }
        if let Some(token) = self.continue_token.as_deref().filter(|t| !t.is_empty()) {
            q.push(("continue", token.to_string()));
        }
        q
    }
}

/// Options of an apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Validate and admit on the server, store nothing, answer as if stored.
    pub dry_run: bool,
}

pub use kohakuriver_api::LogStream;

/// What part of a task's log to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogParams {
    /// Stdout or stderr.
    pub stream: LogStream,
    /// Keep streaming new output until the task's container exits.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u64>,
}

impl LogParams {
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("stream", self.stream.as_str().to_string()),
            ("follow", self.follow.to_string()),
        ];
        if let Some(n) = self.tail {
            q.push(("tail", n.to_string()));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_leaves_out_empty_selectors() {
        assert!(ListParams::default().query().is_empty());
        let q = ListParams::default().labels("a=b").fields("").query();
        assert_eq!(q, vec![("labelSelector", "a=b".to_string())]);
        let q = ListParams {
            continue_token: Some("abc".into()),
            ..ListParams::default().limit(5)
        }
        .query();
        assert_eq!(
            q,
            vec![("limit", "5".to_string()), ("continue", "abc".to_string())]
        );
        assert!(ListParams::default().limit(0).query().is_empty());
    }

    #[test]
    fn log_query() {
        let p = LogParams {
            stream: LogStream::Stderr,
            follow: true,
            tail: Some(5),
        };
        assert_eq!(
            p.query(),
            vec![
                ("stream", "stderr".to_string()),
                ("follow", "true".to_string()),
                ("tail", "5".to_string())
            ]
        );
    }
}
