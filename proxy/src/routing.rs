//! Which endpoint a client wants, from what it sent: the TLS server name
//! (`<endpoint>.<domain>`), the `options` startup parameter
//! (`endpoint=<name>`), or the password (`endpoint=<name>;<password>`).

/// How a client named its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sni,
    Options,
    Password,
}

/// What a client said about its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The endpoint, if the client named one outside its password.
    pub endpoint: Option<(String, Source)>,
    /// The `options` the compute gets: the client's, without `endpoint=`.
    pub options: Option<String>,
}

/// Why a client's routing information is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("{0:?} is not an endpoint name (lowercase letters, digits and '-', at most 63)")]
    BadName(String),
    #[error("the endpoint is given twice: {0:?} by the TLS server name and {1:?} in options")]
    Conflict(String, String),
}

/// What to tell a client that named no endpoint, or an unknown one.
pub const HOW_TO_NAME_AN_ENDPOINT: &str = "name the endpoint in one of three ways: \
    the host name <endpoint>.<domain> (TLS with SNI), \
    options=endpoint=<endpoint> in the connection string, \
    or the password endpoint=<endpoint>;<password> (TLS only)";

/// Whether `name` is an endpoint name: a DNS label.
pub fn valid_name(name: &str) -> bool {
    zenith_utils::api::console::valid_endpoint_name(name)
}

fn checked(name: &str) -> Result<String, RouteError> {
    let name = name.to_ascii_lowercase();
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(RouteError::BadName(name))
    }
}

/// The endpoint in a server name `<endpoint>.<domain>`; a name outside
/// `domain` (e.g. `localhost`) names none.
pub fn endpoint_from_sni(sni: &str, domain: &str) -> Result<Option<String>, RouteError> {
    let sni = sni.trim_end_matches('.');
    let lower = sni.to_ascii_lowercase();
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    match lower.strip_suffix(&domain) {
        Some(prefix) if prefix.ends_with('.') => {
            let label = &prefix[..prefix.len() - 1];
            if label.contains('.') {
                // a.b.<domain>: the first label names it, as with wildcard
                // certificates only one label can match.
                return Err(RouteError::BadName(label.to_string()));
            }
            checked(label).map(Some)
        }
        _ => Ok(None),
    }
}

/// Splits `endpoint=<name>` (or `--endpoint=<name>`) out of the `options`
/// startup parameter; the other options stay for the compute.
pub fn split_options(options: &str) -> Result<(Option<String>, Option<String>), RouteError> {
    let mut endpoint = None;
    let mut rest = Vec::new();
    for token in options.split_ascii_whitespace() {
        let value = token
            .strip_prefix("endpoint=")
            .or_else(|| token.strip_prefix("--endpoint="));
        match value {
            Some(v) => endpoint = Some(checked(v)?),
            None => rest.push(token),
        }
    }
    let rest = (!rest.is_empty()).then(|| rest.join(" "));
    Ok((endpoint, rest))
}

/// The route of a client from its server name and options.
pub fn route(sni: Option<&str>, options: Option<&str>, domain: &str) -> Result<Route, RouteError> {
    let from_sni = match sni {
        Some(s) => endpoint_from_sni(s, domain)?,
        None => None,
    };
    let (from_options, rest) = match options {
        Some(o) => split_options(o)?,
        None => (None, None),
    };
    let endpoint = match (from_sni, from_options) {
        (Some(a), Some(b)) if a != b => return Err(RouteError::Conflict(a, b)),
        (Some(a), _) => Some((a, Source::Sni)),
        (None, Some(b)) => Some((b, Source::Options)),
        (None, None) => None,
    };
    Ok(Route {
        endpoint,
        options: rest,
    })
}

/// The password form `endpoint=<name>;<password>`: the endpoint and the
/// password. `None` if the password does not have that form.
pub fn split_password(password: &str) -> Option<Result<(String, &str), RouteError>> {
    let rest = password
        .strip_prefix("endpoint=")
        .or_else(|| password.strip_prefix("project="))?;
    let (name, pw) = rest.split_once(';')?;
    Some(checked(name).map(|n| (n, pw)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sni_names_the_endpoint_under_the_domain() {
        let d = "zenith.localhost";
        assert_eq!(
            endpoint_from_sni("ep1.zenith.localhost", d),
            Ok(Some("ep1".into()))
        );
        assert_eq!(
            endpoint_from_sni("EP1.Zenith.Localhost.", d),
            Ok(Some("ep1".into()))
        );
        assert_eq!(endpoint_from_sni("localhost", d), Ok(None));
        assert_eq!(endpoint_from_sni("zenith.localhost", d), Ok(None));
        assert_eq!(endpoint_from_sni("ep1.other.localhost", d), Ok(None));
        assert!(endpoint_from_sni("a.b.zenith.localhost", d).is_err());
        assert!(endpoint_from_sni("a_b.zenith.localhost", d).is_err());
    }

    #[test]
    fn options_give_the_endpoint_and_keep_the_rest() {
        assert_eq!(
            split_options("endpoint=ep2 -c search_path=x"),
            Ok((Some("ep2".into()), Some("-c search_path=x".into())))
        );
        assert_eq!(
            split_options("--endpoint=ep2"),
            Ok((Some("ep2".into()), None))
        );
        assert_eq!(split_options("-c a=b"), Ok((None, Some("-c a=b".into()))));
        assert!(split_options("endpoint=").is_err());
    }

    #[test]
    fn sni_and_options_must_agree() {
        let d = "zenith.localhost";
        let r = route(Some("ep1.zenith.localhost"), Some("endpoint=ep1"), d).unwrap();
        assert_eq!(r.endpoint, Some(("ep1".into(), Source::Sni)));
        assert!(matches!(
            route(Some("ep1.zenith.localhost"), Some("endpoint=ep2"), d),
            Err(RouteError::Conflict(..))
        ));
        let r = route(Some("localhost"), Some("endpoint=ep2"), d).unwrap();
        assert_eq!(r.endpoint, Some(("ep2".into(), Source::Options)));
        assert_eq!(route(None, None, d).unwrap().endpoint, None);
    }

    #[test]
    fn password_form() {
        assert_eq!(
            split_password("endpoint=ep1;s3cr;et"),
            Some(Ok(("ep1".into(), "s3cr;et")))
        );
        assert_eq!(
            split_password("project=ep1;x"),
            Some(Ok(("ep1".into(), "x")))
        );
        assert_eq!(split_password("plain"), None);
        assert_eq!(split_password("endpoint=ep1"), None);
        assert!(matches!(split_password("endpoint=a b;x"), Some(Err(_))));
    }

    proptest! {
        #[test]
        fn never_panics(sni in ".{0,80}", options in ".{0,80}", pw in ".{0,80}") {
            let _ = route(Some(&sni), Some(&options), "zenith.localhost");
            let _ = split_password(&pw);
        }
    }
}
