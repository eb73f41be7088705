//! The link-auth web pages: plain HTML forms, no scripts.

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A field of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (zenith_utils::http::percent_decode(k) == name)
            .then(|| zenith_utils::http::percent_decode(v))
    })
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:3em auto}}\
         td{{padding:.2em 1em .2em 0}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>\n",
        t = escape(title)
    )
}

/// The page a link-auth URL opens: who wants to log in where, and the
/// approval form.
pub fn session_page(session: &str, endpoint: &str, user: &str, dbname: &str) -> String {
    let (s, e, u, d) = (
        escape(session),
        escape(endpoint),
        escape(user),
        escape(dbname),
    );
    layout(
        "Zenith: approve a psql session",
        &format!(
            "<p>A client waits to log in:</p>\
             <table><tr><td>endpoint</td><td id=\"endpoint\">{e}</td></tr>\
             <tr><td>role</td><td id=\"user\">{u}</td></tr>\
             <tr><td>database</td><td id=\"dbname\">{d}</td></tr></table>\
             <form method=\"post\" action=\"/psql_session/{s}\">\
             <p><label><input type=\"checkbox\" id=\"create\" name=\"create\" checked> \
             create the role and the database if they do not exist</label></p>\
             <p><button type=\"submit\" id=\"approve\">Approve</button></p></form>"
        ),
    )
}

pub fn approved_page() -> String {
    layout(
        "Session approved",
        "<p id=\"result\">Approved: go back to your client, it is connected.</p>",
    )
}

pub fn error_page(msg: &str) -> String {
    layout(
        "The session was not approved",
        &format!("<p id=\"error\">{}</p>", escape(msg)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_the_url_carried() {
        let p = session_page("abc", "ep<1>", "u\"x", "d&b");
        assert!(p.contains("ep&lt;1&gt;") && p.contains("u&quot;x") && p.contains("d&amp;b"));
        assert!(!p.contains("<1>"));
    }

    #[test]
    fn form_fields_are_decoded() {
        let body = "endpoint=ep1&user=a%20b&create=on";
        assert_eq!(form_field(body, "user").as_deref(), Some("a b"));
        assert_eq!(form_field(body, "create").as_deref(), Some("on"));
        assert_eq!(form_field(body, "dbname"), None);
    }
}
