//! Property tests: no input makes a parser, the server or the client
//! panic, and secrets round-trip.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use proptest::prelude::*;

use super::{cheap_secret, PASSWORD};
use crate::pq_proto::SqlState;
use crate::scram::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn secret_parser_never_panics(s in ".{0,120}", t in "SCRAM-SHA-256\\$[0-9]{0,11}:[A-Za-z0-9+/=]{0,30}\\$[A-Za-z0-9+/=]{0,46}:[A-Za-z0-9+/=]{0,46}") {
        let _ = ScramSecret::parse(&s);
        if let Ok(secret) = ScramSecret::parse(&t) {
            prop_assert_eq!(ScramSecret::parse(&secret.to_string()).unwrap(), secret);
        }
    }

    #[test]
    fn secrets_round_trip(
        iterations in 1u32..,
        salt in proptest::collection::vec(any::<u8>(), 1..64),
        stored_key in any::<[u8; 32]>(),
        server_key in any::<[u8; 32]>(),
    ) {
        let secret = ScramSecret { iterations, salt, stored_key, server_key };
        prop_assert_eq!(ScramSecret::parse(&secret.to_string()).unwrap(), secret);
    }

    #[test]
    fn server_never_panics(
        (mechanism, binding, first) in client_first_message(),
        last in client_final_message(),
    ) {
        let secret = cheap_secret();
        let mut server = ServerExchange::new(&secret, binding.then(|| vec![9; 32]));
        if let Ok(server_first) = server.client_first(mechanism, &first) {
            let last = fill_in_client_final(&last, &first, &server_first);
            match server.client_final(&last) {
                Ok(_) => prop_assert!(false, "a random proof was accepted"),
                Err(e) => prop_assert_ne!(e.sql_state(), SqlState::INTERNAL_ERROR),
            }
        }
        let _ = server.client_final(&last);
    }

    #[test]
    fn client_never_panics(first in server_first_message(), last in server_final_message()) {
        let keys = ScramKeys::from_password(PASSWORD, &cheap_secret());
        let mut client = ClientExchange::with_keys(keys);
        let nonce = client.client_nonce.clone();
        let first = replace(&first, b"@@", nonce.as_bytes());
        if client.server_first(&first).is_ok() {
            prop_assert!(client.server_final(&last).is_err());
        }
        prop_assert!(client.server_final(&last).is_err());
    }

    #[test]
    fn end_point_never_panics(der in proptest::collection::vec(any::<u8>(), 0..256)) {
        let hash = tls_server_end_point(&der);
        prop_assert!([28, 32, 48, 64].contains(&hash.len()));
    }
}

// Strategies for messages that are mostly well formed, so that the
// property tests get past the first checks as well: random bytes alone
// hardly ever make a client-first-message the server accepts.

/// Printable characters except ',' (RFC 5802 `printable`), mostly.
const VALUE: &str = "[!-+\\--~]";

fn re(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern)
        .expect("a valid regex")
        .boxed()
}

fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

/// `(mechanism, server offers binding, client-first-message)`.
fn client_first_message() -> impl Strategy<Value = (&'static str, bool, Vec<u8>)> {
    let flag = prop_oneof![
        3 => Just("n"),
        2 => Just("y"),
        3 => Just("p=tls-server-end-point"),
        1 => Just("p=tls-unique"),
        1 => Just(""),
    ];
    let authzid = prop_oneof![9 => Just(",,"), 1 => Just(",a=b,"), 1 => Just(",")];
    let mext = prop_oneof![9 => Just(""), 1 => Just("m=x,")];
    let user = prop_oneof![9 => re("n=[a-z]{0,3},"), 1 => Just(String::new())];
    let nonce = re(&format!("r={VALUE}{{0,8}}"));
    let ext = prop_oneof![8 => Just(String::new()), 2 => re(&format!("(,[a-z1]={VALUE}{{0,3}}){{1,2}}")), 1 => Just(",".into())];
    let message = (
        flag,
        authzid,
        mext,
        user,
        nonce,
        ext,
        0..10u8,
        any::<bool>(),
    )
        .prop_map(|(flag, authzid, mext, user, nonce, ext, choice, binding)| {
            let mechanism = match choice {
                0..=7 if flag.starts_with("p=") => SCRAM_SHA_256_PLUS,
                0..=7 => SCRAM_SHA_256,
                8 => SCRAM_SHA_256_PLUS,
                _ => "SCRAM-SHA-1",
            };
            let binding = binding || mechanism == SCRAM_SHA_256_PLUS && choice < 7;
            let m = format!("{flag}{authzid}{mext}{user}{nonce}{ext}");
            (mechanism, binding, m.into_bytes())
        });
    prop_oneof![
        4 => message,
        1 => (any::<bool>(), random_bytes()).prop_map(|(b, m)| (SCRAM_SHA_256, b, m)),
    ]
}

/// A client-final-message where `@C` stands for the right channel binding
/// and `@@` for the combined nonce ([`fill_in_client_final`]).
fn client_final_message() -> impl Strategy<Value = Vec<u8>> {
    let cbind = prop_oneof![
        6 => Just("c=@C,".to_string()),
        1 => Just("c=biws,".into()),
        1 => Just("c=eSws,".into()),
        1 => re("c=[A-Za-z0-9+/=]{0,12},"),
        1 => Just(String::new()),
    ];
    let nonce = prop_oneof![
        7 => Just("r=@@,".to_string()),
        1 => re(&format!("r={VALUE}{{0,4}},")),
        1 => Just(String::new()),
    ];
    let ext =
        prop_oneof![8 => Just(String::new()), 2 => re(&format!("([a-z1]={VALUE}{{0,3}},){{1,2}}"))];
    let proof = prop_oneof![
        6 => any::<[u8; 32]>().prop_map(|p| format!("p={}", BASE64.encode(p))),
        2 => re("p=[A-Za-z0-9+/=]{0,48}"),
        1 => Just(String::new()),
    ];
    let tail = prop_oneof![9 => Just(""), 1 => Just(",x=1"), 1 => Just("\0")];
    let message = (cbind, nonce, ext, proof, tail)
        .prop_map(|(c, r, e, p, t)| format!("{c}{r}{e}{p}{t}").into_bytes());
    prop_oneof![4 => message, 1 => random_bytes()]
}

/// Puts the channel binding a client would send for `client_first` in
/// place of `@C`, and the nonce of `server_first` in place of `@@`.
fn fill_in_client_final(last: &[u8], client_first: &[u8], server_first: &[u8]) -> Vec<u8> {
    let header_len = client_first
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b',')
        .nth(1)
        .map_or(0, |(i, _)| i + 1);
    let mut cbind_input = client_first[..header_len].to_vec();
    if cbind_input.starts_with(b"p=") {
        cbind_input.extend_from_slice(&[9; 32]);
    }
    let nonce = &server_first
        .split(|&c| c == b',')
        .next()
        .unwrap_or_default()[2..];
    let last = replace(last, b"@C", BASE64.encode(cbind_input).as_bytes());
    replace(&last, b"@@", nonce)
}

/// A server-first-message where `@@` stands for the client's nonce.
fn server_first_message() -> impl Strategy<Value = Vec<u8>> {
    let mext = prop_oneof![9 => Just(""), 1 => Just("m=x,")];
    let nonce = prop_oneof![
        7 => re(&format!("r=@@{VALUE}{{1,4}}")),
        1 => Just("r=@@".to_string()),
        1 => re(&format!("r={VALUE}{{0,6}}")),
    ];
    let salt = prop_oneof![
        7 => proptest::collection::vec(any::<u8>(), 1..20).prop_map(|s| BASE64.encode(s)),
        2 => re("[A-Za-z0-9+/=]{0,12}"),
    ];
    let iterations =
        prop_oneof![8 => (1..100_000u32).prop_map(|i| i.to_string()), 2 => re("[0-9]{0,11}")];
    let ext =
        prop_oneof![8 => Just(String::new()), 2 => re(",[a-z1]=[^,]{0,3}"), 1 => Just(",".into())];
    let message = (mext, nonce, salt, iterations, ext)
        .prop_map(|(m, r, s, i, e)| format!("{m}{r},s={s},i={i}{e}").into_bytes());
    prop_oneof![4 => message, 1 => random_bytes()]
}

fn server_final_message() -> impl Strategy<Value = Vec<u8>> {
    let message = prop_oneof![
        6 => any::<[u8; 32]>().prop_map(|v| format!("v={}", BASE64.encode(v))),
        2 => re("(v|e|x)=[A-Za-z0-9+/=]{0,48}(,[a-z]=[^,]{0,3})?"),
    ];
    prop_oneof![4 => message.prop_map(String::into_bytes), 1 => random_bytes()]
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match data.windows(from.len()).position(|w| w == from) {
        Some(i) => [&data[..i], to, &data[i + from.len()..]].concat(),
        None => data.to_vec(),
    }
}
