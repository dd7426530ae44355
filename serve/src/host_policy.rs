//! Which `Host` names and which browser origins the server answers.
//!
//! A server on loopback is reachable from any web page the same machine's browser opens:
//! through DNS rebinding (a name the attacker controls, re-pointed at 127.0.0.1) a page could
//! send requests and read the answers. Browsers always send the name they resolved as `Host`,
//! so answering only loopback names (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`) closes
//! that door. A server on any other address answers every name unless `--allowed-hosts`
//! lists them (a public deployment should).
//!
//! Browsers also send `Origin` on cross-origin requests, and a "simple" cross-origin POST
//! (`Content-Type: text/plain`) is sent without asking first: such a request is refused
//! before its body is read unless its origin names the same host and port as `Host`. The
//! server sends no CORS headers, so no other origin can read an answer either.
//!
//! The health and readiness probes (`/v2/health/*`) and `/metrics` answer whatever the
//! `Host`: kubelet and Prometheus address a pod by its IP, and these routes take no input
//! and return no model output.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_error::ApiError;

/// Most names `--allowed-hosts` may list.
pub const MAX_ALLOWED_HOSTS: usize = 64;
/// Longest name in `--allowed-hosts` (a DNS name's limit).
pub const MAX_HOST_NAME: usize = 253;

/// The `--allowed-hosts` setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Loopback names only when listening on a loopback address; every name otherwise.
    #[default]
    Auto,
    /// Every name (`*`).
    Any,
    /// These names (lower case, no port); one starting with `.` also matches its subdomains.
    Names(Vec<String>),
}

impl FromStr for AllowedHosts {
    type Err = String;

    /// Parses `auto`, `*`, or a comma-separated list of host names or IP addresses (IPv6 in
    /// brackets), without ports; `.example.com` matches `example.com` and its subdomains.
    ///
    /// ```
    /// use serve::AllowedHosts;
    /// assert_eq!("*".parse::<AllowedHosts>(), Ok(AllowedHosts::Any));
    /// assert_eq!("Api.Example.com,[::1]".parse::<AllowedHosts>(),
    ///            Ok(AllowedHosts::Names(vec!["api.example.com".into(), "[::1]".into()])));
    /// assert!("example.com:8080".parse::<AllowedHosts>().unwrap_err().starts_with("--allowed-hosts"));
    /// ```
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => return Ok(AllowedHosts::Auto),
            "*" => return Ok(AllowedHosts::Any),
            _ => {}
        }
        let names: Vec<&str> = text.split(',').map(str::trim).collect();
        if names.len() > MAX_ALLOWED_HOSTS {
            return Err(format!("--allowed-hosts lists {} names; at most {MAX_ALLOWED_HOSTS}", names.len()));
        }
        names.iter().map(|name| check_listed_name(name)).collect::<Result<_, _>>().map(AllowedHosts::Names)
    }
}

/// One listed name, lower-cased; the error names the flag and says what a name may be.
fn check_listed_name(name: &str) -> Result<String, String> {
    let bare = name.strip_prefix('.').unwrap_or(name);
    let valid = !bare.is_empty()
        && name.len() <= MAX_HOST_NAME
        && match bare.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
        };
    if !valid {
        return Err(format!(
            "--allowed-hosts: {name:?} is not a host name: give `auto`, `*`, or 1 to {MAX_ALLOWED_HOSTS} \
             comma-separated names of up to {MAX_HOST_NAME} letters, digits, '-' and '.' (or an IPv6 \
             address in brackets), without a port; a leading '.' also allows subdomains"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// The policy in force, resolved once the listening address is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// `localhost`, `*.localhost` and loopback addresses.
    Loopback,
    Any,
    Names(Vec<String>),
}

impl HostPolicy {
    /// `Auto` becomes `Loopback` for a loopback address and `Any` for every other.
    pub fn resolve(allowed: &AllowedHosts, listening: SocketAddr) -> Self {
        match allowed {
            AllowedHosts::Auto if listening.ip().is_loopback() => HostPolicy::Loopback,
            AllowedHosts::Auto | AllowedHosts::Any => HostPolicy::Any,
            AllowedHosts::Names(names) => HostPolicy::Names(names.clone()),
        }
    }

    /// Whether `host` (a `Host` header's name, lower case, without its port) is answered.
    fn allows(&self, host: &str) -> bool {
        match self {
            HostPolicy::Any => true,
            HostPolicy::Loopback => is_loopback_name(host),
            HostPolicy::Names(names) => names.iter().any(|name| match name.strip_prefix('.') {
                Some(domain) => host == domain || host.strip_suffix(domain).is_some_and(|sub| sub.ends_with('.')),
                None => host == name,
            }),
        }
    }
}

impl std::fmt::Display for HostPolicy {
    /// What the server answers, for its start-up line and its 403 messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPolicy::Any => write!(f, "any Host name"),
            HostPolicy::Loopback => write!(f, "only loopback Host names (localhost, *.localhost, 127.0.0.0/8, [::1])"),
            HostPolicy::Names(names) => write!(f, "only the Host names {}", names.join(", ")),
        }
    }
}

/// `localhost`, a subdomain of it (RFC 6761 keeps those on loopback), or a loopback address.
fn is_loopback_name(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let address = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    address.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Splits `name[:port]` (or `[v6][:port]`): the name in lower case without a trailing dot,
/// and the port as written. `None` when it is not a plausible authority.
fn split_authority(authority: &str) -> Option<(String, Option<&str>)> {
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port),
            None if rest.is_empty() => None,
            None => return None,
        };
        (&authority[..=end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    let plausible = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':' | '_');
    if name.is_empty() || !name.chars().all(plausible) || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    Some((name.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// Routes answered whatever the `Host` and `Origin`.
fn exempt(path: &str) -> bool {
    path.starts_with("/v2/health/") || path == "/metrics"
}

/// Refuses, before the body is read, a request for a name the policy does not answer (403)
/// and a browser request from another origin (403).
pub async fn check(State(policy): State<Arc<HostPolicy>>, request: Request, next: Next) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    match refusal(&policy, &request) {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

fn refusal(policy: &HostPolicy, request: &Request) -> Option<ApiError> {
    let forbidden = |message: String| Some(ApiError { status: StatusCode::FORBIDDEN, message });
    let host = match request.headers().get(header::HOST).map(|h| h.to_str()) {
        Some(Ok(host)) => host,
        Some(Err(_)) => return Some(ApiError::bad_request("the Host header is not ASCII")),
        None => return Some(ApiError::bad_request("the request has no Host header")),
    };
    let Some((name, port)) = split_authority(host) else {
        return Some(ApiError::bad_request(format!("the Host header {host:?} is not a host name and port")));
    };
    // An absolute request target (`GET http://name/ HTTP/1.1`) names a host of its own.
    let target = request.uri().authority().and_then(|a| split_authority(a.as_str()));
    let refused = |name: &str| !policy.allows(name);
    if refused(&name) || target.is_some_and(|(target, _)| refused(&target)) {
        return forbidden(format!(
            "Host {host:?} is not answered: this server answers {policy}; start it with --allowed-hosts \
             NAME[,NAME...] (or '*') to answer other names"
        ));
    }
    let origin = request.headers().get(header::ORIGIN)?;
    let same_origin = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")))
        .and_then(split_authority)
        .is_some_and(|(origin_name, origin_port)| origin_name == name && origin_port == port);
    if same_origin {
        return None;
    }
    forbidden(format!(
        "cross-origin request from Origin {:?} refused: browsers are answered only from this server's own \
         origin (host and port {host:?}); the server sends no CORS headers",
        String::from_utf8_lossy(origin.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &str, listening: &str) -> HostPolicy {
        HostPolicy::resolve(&allowed.parse().unwrap(), listening.parse().unwrap())
    }

    #[test]
    fn auto_answers_only_loopback_names_on_loopback_and_every_name_elsewhere() {
        assert_eq!(policy("auto", "127.0.0.1:8080"), HostPolicy::Loopback);
        assert_eq!(policy("auto", "[::1]:8080"), HostPolicy::Loopback);
        assert_eq!(policy("auto", "0.0.0.0:8080"), HostPolicy::Any);
        assert_eq!(policy("auto", "10.1.2.3:8080"), HostPolicy::Any);
        assert_eq!(policy("a.example", "127.0.0.1:8080"), HostPolicy::Names(vec!["a.example".into()]));
    }

    #[test]
    fn loopback_names() {
        for host in ["localhost", "app.localhost", "127.0.0.1", "127.9.9.9", "[::1]", "[::ffff:127.0.0.1]"] {
            assert!(HostPolicy::Loopback.allows(host), "{host}");
        }
        for host in ["evil.example", "localhost.evil.example", "10.0.0.1", "0.0.0.0", "[::2]", "127.0.0.1.nip.io"] {
            assert!(!HostPolicy::Loopback.allows(host), "{host}");
        }
    }

    #[test]
    fn listed_names_and_subdomains() {
        let names = policy("api.example.com,.corp.example", "0.0.0.0:80");
        for host in ["api.example.com", "corp.example", "a.b.corp.example"] {
            assert!(names.allows(host), "{host}");
        }
        for host in ["example.com", "xapi.example.com", "evilcorp.example", "localhost"] {
            assert!(!names.allows(host), "{host}");
        }
    }

    #[test]
    fn authorities_split_into_name_and_port() {
        assert_eq!(split_authority("LocalHost:8080"), Some(("localhost".into(), Some("8080"))));
        assert_eq!(split_authority("example.com."), Some(("example.com".into(), None)));
        assert_eq!(split_authority("[::1]:80"), Some(("[::1]".into(), Some("80"))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]".into(), None)));
        for bad in ["", ":80", "a b", "a:b", "user@host", "a/b", "[::1]x", "host:99999"] {
            assert_eq!(split_authority(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_lists_are_refused_naming_the_flag() {
        for bad in ["", ",", "a,,b", "a:80", "a/b", "[zz]", "é.example"] {
            let error = bad.parse::<AllowedHosts>().unwrap_err();
            assert!(error.starts_with("--allowed-hosts"), "{bad}: {error}");
        }
        let too_many = vec!["a"; MAX_ALLOWED_HOSTS + 1].join(",");
        assert!(too_many.parse::<AllowedHosts>().unwrap_err().contains("at most 64"));
    }
}
