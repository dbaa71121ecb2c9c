//! API discovery: what kinds this server serves, told the way Kubernetes clients ask for
//! it (`/api`, `/apis`, `/apis/kohakuriver`, `/apis/kohakuriver/v1`, the aggregated
//! `APIGroupDiscoveryList`, and `/version`).
//!
//! Every answer is built from [`served_kinds`], the one list of kinds; each entry takes its
//! names, short names, categories and subresources from the kind's [`Resource`] constants,
//! so adding a kind is one entry there. The shapes follow `k8s.io/apimachinery`'s
//! `metav1.APIResourceList` and `k8s.io/api/apidiscovery/v2`, as client-go decodes them.

use serde::Serialize;

use crate::event::Event;
use crate::group::TaskGroup;
use crate::media::parse_accept;
use crate::node::Node;
use crate::resource::{Resource, Subresource};
use crate::task::Task;

/// The API group every kind belongs to.
pub const GROUP: &str = "kohakuriver";
/// The group's one version.
pub const VERSION: &str = "v1";
/// The verbs of every kind's collection and objects, in Kubernetes' words.
pub const KIND_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// The media type of an aggregated discovery answer, version `v2`.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// The media type of an aggregated discovery answer, version `v2beta1` (kubectl before 1.30).
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// One served kind, as discovery tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// `Task`.
    pub kind: &'static str,
    /// `tasks`, the path segment.
    pub plural: &'static str,
    /// `task`.
    pub singular: &'static str,
    /// `tk`.
    pub short_names: &'static [&'static str],
    /// `all`, `kohakuriver`.
    pub categories: &'static [&'static str],
    /// `status`, `log`.
    pub subresources: &'static [Subresource],
}

impl KindInfo {
    /// The description of kind `R`.
    pub fn of<R: Resource>() -> KindInfo {
        KindInfo {
            kind: R::KIND,
            plural: R::PLURAL,
            singular: R::SINGULAR,
            short_names: R::SHORT_NAMES,
            categories: R::CATEGORIES,
            subresources: R::SUBRESOURCES,
        }
    }
}

/// Every kind the server serves, in the order discovery lists them.
pub fn served_kinds() -> Vec<KindInfo> {
    vec![
        KindInfo::of::<Task>(),
        KindInfo::of::<TaskGroup>(),
        KindInfo::of::<Node>(),
        KindInfo::of::<Event>(),
    ]
}

/// `GroupVersionForDiscovery`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersion {
    /// `kohakuriver/v1`.
    pub group_version: String,
    /// `v1`.
    pub version: String,
}

/// `APIGroup`: a group and its versions.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroup {
    /// `APIGroup` at the top level; absent inside a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// `v1` at the top level; absent inside a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<&'static str>,
    /// `kohakuriver`.
    pub name: &'static str,
    /// Every version served.
    pub versions: Vec<GroupVersion>,
    /// The version clients should use.
    pub preferred_version: GroupVersion,
}

/// `APIGroupList`, the legacy answer of `GET /apis`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroupList {
    /// `APIGroupList`.
    pub kind: &'static str,
    /// `v1`.
    pub api_version: &'static str,
    /// The groups.
    pub groups: Vec<ApiGroup>,
}

/// `APIVersions`, the legacy answer of `GET /api`: the versions of the core group.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiVersions {
    /// `APIVersions`.
    pub kind: &'static str,
    /// `v1`.
    pub api_version: &'static str,
    /// Always empty: this server serves no core group.
    pub versions: Vec<String>,
    /// Always empty.
    #[serde(rename = "serverAddressByClientCIDRs")]
    pub server_address_by_client_cidrs: Vec<String>,
}

/// `APIResource`: a kind or subresource in an `APIResourceList`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    /// `tasks`, or `tasks/status` for a subresource.
    pub name: String,
    /// `task`; empty for a subresource, as Kubernetes writes it.
    pub singular_name: &'static str,
    /// Always false: every kind is cluster-scoped.
    pub namespaced: bool,
    /// `Task`.
    pub kind: &'static str,
    /// The verbs.
    pub verbs: Vec<&'static str>,
    /// Short names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<&'static str>,
    /// Categories.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<&'static str>,
}

/// `APIResourceList`, the answer of `GET /apis/kohakuriver/v1`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceList {
    /// `APIResourceList`.
    pub kind: &'static str,
    /// `v1`.
    pub api_version: &'static str,
    /// `kohakuriver/v1`.
    pub group_version: String,
    /// Every kind, each followed by its subresources.
    pub resources: Vec<ApiResource>,
}

/// `GroupVersionKind` as aggregated discovery writes it.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ResponseKind {
    /// `kohakuriver`.
    pub group: &'static str,
    /// `v1`.
    pub version: &'static str,
    /// `Task`.
    pub kind: &'static str,
}

/// `APISubresourceDiscovery`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubresourceDiscovery {
    /// `status`.
    pub subresource: &'static str,
    /// The kind it answers with.
    pub response_kind: ResponseKind,
    /// The verbs.
    pub verbs: Vec<&'static str>,
}

/// `APIResourceDiscovery`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDiscovery {
    /// `tasks`.
    pub resource: &'static str,
    /// The kind it answers with.
    pub response_kind: ResponseKind,
    /// Always `Cluster`.
    pub scope: &'static str,
    /// `task`.
    pub singular_resource: &'static str,
    /// The verbs.
    pub verbs: Vec<&'static str>,
    /// Short names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<&'static str>,
    /// Categories.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<&'static str>,
    /// Subresources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subresources: Vec<SubresourceDiscovery>,
}

/// `APIVersionDiscovery`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct VersionDiscovery {
    /// `v1`.
    pub version: &'static str,
    /// The kinds.
    pub resources: Vec<ResourceDiscovery>,
    /// Always `Current`: this server describes only itself.
    pub freshness: &'static str,
}

/// Object metadata as aggregated discovery writes it (only a name).
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct DiscoveryMeta {
    /// The group's name; absent on the list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
}

/// `APIGroupDiscovery`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct GroupDiscovery {
    /// The group's name.
    pub metadata: DiscoveryMeta,
    /// Its versions, preferred first.
    pub versions: Vec<VersionDiscovery>,
}

/// `APIGroupDiscoveryList`, the aggregated answer of `GET /apis` and `GET /api`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupDiscoveryList {
    /// `APIGroupDiscoveryList`.
    pub kind: &'static str,
    /// `apidiscovery.k8s.io/v2` or `apidiscovery.k8s.io/v2beta1`, as asked.
    pub api_version: &'static str,
    /// Empty.
    pub metadata: DiscoveryMeta,
    /// The groups.
    pub items: Vec<GroupDiscovery>,
}

/// Which shape a discovery request asked for in its `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// `APIVersions` / `APIGroupList` / `APIGroup`, as `application/json`.
    Legacy,
    /// `APIGroupDiscoveryList` version `v2`.
    AggregatedV2,
    /// `APIGroupDiscoveryList` version `v2beta1`.
    AggregatedV2Beta1,
}

impl DiscoveryFormat {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Legacy => "application/json",
            DiscoveryFormat::AggregatedV2 => AGGREGATED_V2,
            DiscoveryFormat::AggregatedV2Beta1 => AGGREGATED_V2BETA1,
        }
    }
}

/// The format to answer `GET /api` or `GET /apis` in: the first JSON aggregated discovery
/// range of `accept` that we serve (client-go lists it before plain JSON), else legacy.
/// Protobuf ranges are skipped: this server speaks only JSON.
pub fn negotiate(accept: Option<&str>) -> DiscoveryFormat {
    let Some(accept) = accept else {
        return DiscoveryFormat::Legacy;
    };
    for range in parse_accept(accept) {
        if range.essence != "application/json"
            || range.param("g") != Some("apidiscovery.k8s.io")
            || range.param("as") != Some("APIGroupDiscoveryList")
            // `profile=nopeer` asks for this server's own view, which is the only one.
            || range.param("profile").is_some_and(|p| p != "nopeer")
        {
            continue;
        }
        match range.param("v") {
            Some("v2") => return DiscoveryFormat::AggregatedV2,
            Some("v2beta1") => return DiscoveryFormat::AggregatedV2Beta1,
            _ => {}
        }
    }
    DiscoveryFormat::Legacy
}

fn group_version() -> GroupVersion {
    GroupVersion {
        group_version: format!("{GROUP}/{VERSION}"),
        version: VERSION.to_string(),
    }
}

fn group(top_level: bool) -> ApiGroup {
    ApiGroup {
        kind: top_level.then_some("APIGroup"),
        api_version: top_level.then_some("v1"),
        name: GROUP,
        versions: vec![group_version()],
        preferred_version: group_version(),
    }
}

/// `GET /api`: no core versions.
pub fn api_versions() -> ApiVersions {
    ApiVersions {
        kind: "APIVersions",
        api_version: "v1",
        versions: Vec::new(),
        server_address_by_client_cidrs: Vec::new(),
    }
}

/// `GET /apis` (legacy).
pub fn api_group_list() -> ApiGroupList {
    ApiGroupList {
        kind: "APIGroupList",
        api_version: "v1",
        groups: vec![group(false)],
    }
}

/// `GET /apis/kohakuriver`.
pub fn api_group() -> ApiGroup {
    group(true)
}

/// `GET /apis/kohakuriver/v1`: every kind, each followed by its subresources.
pub fn api_resource_list() -> ApiResourceList {
    let mut resources = Vec::new();
    for k in served_kinds() {
        resources.push(ApiResource {
            name: k.plural.to_string(),
            singular_name: k.singular,
            namespaced: false,
            kind: k.kind,
            verbs: KIND_VERBS.to_vec(),
            short_names: k.short_names.to_vec(),
            categories: k.categories.to_vec(),
        });
        for s in k.subresources {
            resources.push(ApiResource {
                name: format!("{}/{}", k.plural, s.name),
                singular_name: "",
                namespaced: false,
                kind: k.kind,
                verbs: s.verbs.to_vec(),
                short_names: Vec::new(),
                categories: Vec::new(),
            });
        }
    }
    ApiResourceList {
        kind: "APIResourceList",
        api_version: "v1",
        group_version: format!("{GROUP}/{VERSION}"),
        resources,
    }
}

/// The aggregated answer: for `GET /apis` (`core == false`) our group with every kind; for
/// `GET /api` (`core == true`) no group at all, since we serve no core group.
pub fn group_discovery_list(format: DiscoveryFormat, core: bool) -> GroupDiscoveryList {
    let response_kind = |kind| ResponseKind {
        group: GROUP,
        version: VERSION,
        kind,
    };
    let resources = served_kinds()
        .into_iter()
        .map(|k| ResourceDiscovery {
            resource: k.plural,
            response_kind: response_kind(k.kind),
            scope: "Cluster",
            singular_resource: k.singular,
            verbs: KIND_VERBS.to_vec(),
            short_names: k.short_names.to_vec(),
            categories: k.categories.to_vec(),
            subresources: k
                .subresources
                .iter()
                .map(|s| SubresourceDiscovery {
                    subresource: s.name,
                    response_kind: response_kind(k.kind),
                    verbs: s.verbs.to_vec(),
                })
                .collect(),
        })
        .collect();
    let items = if core {
        Vec::new()
    } else {
        vec![GroupDiscovery {
            metadata: DiscoveryMeta { name: Some(GROUP) },
            versions: vec![VersionDiscovery {
                version: VERSION,
                resources,
                freshness: "Current",
            }],
        }]
    };
    GroupDiscoveryList {
        kind: "APIGroupDiscoveryList",
        api_version: match format {
            DiscoveryFormat::AggregatedV2Beta1 => "apidiscovery.k8s.io/v2beta1",
            DiscoveryFormat::Legacy | DiscoveryFormat::AggregatedV2 => "apidiscovery.k8s.io/v2",
        },
        metadata: DiscoveryMeta::default(),
        items,
    }
}

/// `GET /version`: this server's own version (never a Kubernetes one), in the shape of
/// `k8s.io/apimachinery/pkg/version.Info`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// `0`.
    pub major: String,
    /// `1`.
    pub minor: String,
    /// `v0.1.0`.
    pub git_version: String,
    /// Empty: the build records no commit.
    pub git_commit: String,
    /// Empty: the build records no tree state.
    pub git_tree_state: String,
    /// Empty: the build records no date.
    pub build_date: String,
    /// Empty: this server is not written in Go.
    pub go_version: String,
    /// `rustc`.
    pub compiler: String,
    /// `linux/amd64`.
    pub platform: String,
}

/// The version answer for package version `pkg_version` (`0.1.0`) on `os`/`arch` (Rust's
/// names, turned into Go's: `x86_64` → `amd64`, `aarch64` → `arm64`).
pub fn version_info(pkg_version: &str, os: &str, arch: &str) -> VersionInfo {
    let mut parts = pkg_version.split('.');
    let major = parts.next().unwrap_or("0").to_string();
    let minor = parts.next().unwrap_or("0").to_string();
    let arch = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    VersionInfo {
        major,
        minor,
        git_version: format!("v{pkg_version}"),
        git_commit: String::new(),
        git_tree_state: String::new(),
        build_date: String::new(),
        go_version: String::new(),
        compiler: "rustc".to_string(),
        platform: format!("{os}/{arch}"),
    }
}

/// For a path that names a namespace (`/apis/kohakuriver/v1/namespaces/…`) or the core
/// group (`/api/v1/…`), the sentence that explains why it does not exist; `None` for any
/// other path.
pub fn unserved_path_message(path: &str) -> Option<String> {
    let kinds: Vec<&str> = served_kinds().iter().map(|k| k.plural).collect();
    let kinds = kinds.join(" and ");
    let namespaced = format!("/apis/{GROUP}/{VERSION}/namespaces");
    if path == namespaced || path.starts_with(&format!("{namespaced}/")) {
        return Some(format!(
            "no such path: {path}: {kinds} are cluster-scoped, so they have no namespace; \
             ask /apis/{GROUP}/{VERSION}/PLURAL instead, or drop -n/--namespace"
        ));
    }
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        return Some(format!(
            "no such path: {path}: this server serves no core (v1) group, only {GROUP}/{VERSION} \
             ({kinds}, cluster-scoped; no namespaces)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_described_with_its_names() {
        let kinds: Vec<String> = served_kinds()
            .iter()
            .map(|k| {
                let subs: Vec<&str> = k.subresources.iter().map(|s| s.name).collect();
                format!(
                    "{} {} {} short={} categories={} sub={}",
                    k.kind,
                    k.plural,
                    k.singular,
                    k.short_names.join(","),
                    k.categories.join(","),
                    subs.join(",")
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Task tasks task short=tk categories=all,kohakuriver sub=status,log",
                "TaskGroup taskgroups taskgroup short=tg categories=all,kohakuriver sub=status",
                "Node nodes node short=no categories=kohakuriver sub=status",
                "Event events event short=ev categories=kohakuriver sub=",
            ]
        );
    }

    #[test]
    fn short_names_are_unique_and_unlike_any_plural() {
        let kinds = served_kinds();
        let mut names: Vec<&str> = kinds.iter().flat_map(|k| k.short_names.to_vec()).collect();
        names.extend(kinds.iter().map(|k| k.plural));
        names.extend(kinds.iter().map(|k| k.singular));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name is used twice: {names:?}");
    }

    #[test]
    fn resource_list_lists_kinds_then_their_subresources() {
        let list = serde_json::to_value(api_resource_list()).unwrap();
        assert_eq!(list["kind"], "APIResourceList");
        assert_eq!(list["groupVersion"], "kohakuriver/v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "tasks",
                "tasks/status",
                "tasks/log",
                "taskgroups",
                "taskgroups/status",
                "nodes",
                "nodes/status",
                "events"
            ]
        );
        let tasks = &list["resources"][0];
        assert_eq!(tasks["namespaced"], false);
        assert_eq!(tasks["shortNames"], serde_json::json!(["tk"]));
        assert_eq!(
            tasks["verbs"],
            serde_json::json!([
                "create", "delete", "get", "list", "patch", "update", "watch"
            ])
        );
        assert_eq!(list["resources"][2]["verbs"], serde_json::json!(["get"]));
        assert!(list["resources"][1].get("shortNames").is_none());
    }

    #[test]
    fn aggregated_list_has_client_go_field_names() {
        let list = serde_json::to_value(group_discovery_list(DiscoveryFormat::AggregatedV2, false))
            .unwrap();
        assert_eq!(list["apiVersion"], "apidiscovery.k8s.io/v2");
        let group = &list["items"][0];
        assert_eq!(group["metadata"]["name"], "kohakuriver");
        let version = &group["versions"][0];
        assert_eq!(version["version"], "v1");
        assert_eq!(version["freshness"], "Current");
        let tasks = &version["resources"][0];
        assert_eq!(tasks["resource"], "tasks");
        assert_eq!(tasks["scope"], "Cluster");
        assert_eq!(tasks["singularResource"], "task");
        assert_eq!(
            tasks["responseKind"],
            serde_json::json!({"group": "kohakuriver", "version": "v1", "kind": "Task"})
        );
        assert_eq!(
            tasks["categories"],
            serde_json::json!(["all", "kohakuriver"])
        );
        assert_eq!(tasks["subresources"][1]["subresource"], "log");
        assert_eq!(tasks["subresources"][1]["responseKind"]["kind"], "Task");
        let core = group_discovery_list(DiscoveryFormat::AggregatedV2Beta1, true);
        assert_eq!(core.api_version, "apidiscovery.k8s.io/v2beta1");
        assert!(core.items.is_empty());
    }

    #[test]
    fn negotiation_follows_the_first_aggregated_json_range() {
        let check = |accept: Option<&str>, want: DiscoveryFormat| {
            assert_eq!(negotiate(accept), want, "{accept:?}");
        };
        use DiscoveryFormat::*;
        check(None, Legacy);
        check(Some("application/json"), Legacy);
        check(Some("*/*"), Legacy);
        // kubectl 1.32: v2, then plain JSON.
        check(
            Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
            ),
            AggregatedV2,
        );
        // kubectl 1.27–1.29: v2beta1 first.
        check(
            Some(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
            ),
            AggregatedV2Beta1,
        );
        check(
            Some(
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;as=APIGroupDiscoveryList;v=v2beta1;g=apidiscovery.k8s.io",
            ),
            AggregatedV2Beta1,
        );
        check(
            Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json",
            ),
            AggregatedV2,
        );
        check(
            Some("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"),
            Legacy,
        );
    }

    #[test]
    fn version_is_ours_not_kubernetes() {
        let v = version_info("0.1.0", "linux", "x86_64");
        assert_eq!((v.major.as_str(), v.minor.as_str()), ("0", "1"));
        assert_eq!(v.git_version, "v0.1.0");
        assert_eq!(v.compiler, "rustc");
        assert_eq!(v.platform, "linux/amd64");
        assert_eq!(
            version_info("2.13.4", "macos", "aarch64").platform,
            "macos/arm64"
        );
    }

    #[test]
    fn namespaced_and_core_paths_are_explained() {
        let m = unserved_path_message("/apis/kohakuriver/v1/namespaces/foo/tasks").unwrap();
        assert!(m.contains("cluster-scoped"), "{m}");
        assert!(m.contains("-n/--namespace"), "{m}");
        let m = unserved_path_message("/api/v1/namespaces/default/pods").unwrap();
        assert!(m.contains("no core (v1) group"), "{m}");
        assert_eq!(unserved_path_message("/apis/kohakuriver/v1/nope"), None);
        assert_eq!(unserved_path_message("/api/v10"), None);
    }
}
