//! Media types as HTTP writes them in `Accept` and `Content-Type`: the essence
//! (`application/json`) and its parameters (`g=apidiscovery.k8s.io;v=v2;as=…`). Kubernetes
//! clients choose answer shapes through those parameters (aggregated discovery, `Table`), so
//! the server reads them with this one parser.

use std::collections::BTreeMap;

/// One media range of an `Accept` header, or a `Content-Type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRange {
    /// `type/subtype`, lowercased, e.g. `application/json`.
    pub essence: String,
    /// Parameters by lowercased name, values as written (quotes removed).
    pub params: BTreeMap<String, String>,
}

impl MediaRange {
    /// Parses one media range (`application/json;as=Table;v=v1;g=meta.k8s.io`); `None`
    /// when it has no `type/subtype`.
    pub fn parse(text: &str) -> Option<MediaRange> {
        let mut parts = text.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        if !essence.contains('/') {
            return None;
        }
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                ))
            })
            .collect();
        Some(MediaRange { essence, params })
    }

    /// The value of parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// True when this range accepts JSON: `application/json`, `application/*` or `*/*`.
    pub fn accepts_json(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "application/json" | "application/*" | "*/*"
        )
    }
}

/// The media ranges of an `Accept` header, in the order written (clients list their
/// preference first; quality values are kept as the `q` parameter and not reordered by).
pub fn parse_accept(accept: &str) -> Vec<MediaRange> {
    accept.split(',').filter_map(MediaRange::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_and_parameters_in_order() {
        let ranges = parse_accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, application/json",
        );
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].essence, "application/json");
        assert_eq!(ranges[0].param("as"), Some("APIGroupDiscoveryList"));
        assert_eq!(ranges[0].param("v"), Some("v2"));
        assert!(ranges[1].params.is_empty());
    }

    #[test]
    fn tolerates_spaces_quotes_case_and_junk() {
        let ranges = parse_accept(" Application/JSON ; AS=\"Table\" ,, nonsense, */*;q=0.8");
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].essence, "application/json");
        assert_eq!(ranges[0].param("as"), Some("Table"));
        assert!(ranges[1].accepts_json());
        assert_eq!(ranges[1].param("q"), Some("0.8"));
    }
}
