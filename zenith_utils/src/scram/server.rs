//! The server side of one SCRAM authentication: [`ServerExchange`].

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::crypto::{auth_message, hmac, random_nonce, sha256, xor};
use super::error::ScramError;
use super::messages::{
    parse_client_final, parse_client_first, Gs2Flag, GS2_NONE, GS2_TLS_SERVER_END_POINT,
    GS2_UNUSED, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use super::secret::{ScramKeys, ScramSecret};

/// The server side of one SCRAM authentication: [`mechanisms`] to offer in
/// AuthenticationSASL, then [`client_first`] with the SASLInitialResponse
/// and [`client_final`] with the SASLResponse. Any error ends the exchange;
/// a later call fails with [`ScramError::OutOfOrder`].
///
/// A SASLInitialResponse without data (length -1) is allowed by the
/// protocol: the server answers with an empty AuthenticationSASLContinue
/// and the client sends its first message in a SASLResponse, which goes to
/// [`client_first`] with the mechanism of the initial response.
///
/// [`mechanisms`]: ServerExchange::mechanisms
/// [`client_first`]: ServerExchange::client_first
/// [`client_final`]: ServerExchange::client_final
pub struct ServerExchange {
    secret: ScramSecret,
    /// `Some(hash)`: SCRAM-SHA-256-PLUS is offered.
    channel_binding: Option<Vec<u8>>,
    state: ServerState,
    /// Our part of the nonce; random unless a test sets it.
    server_nonce: String,
}

enum ServerState {
    Initial,
    SentFirst {
        /// The gs2 header plus, for `p=`, the channel-binding data: what
        /// `c=` must encode.
        cbind_input: Vec<u8>,
        /// Whether the gs2 flag was `p` (a wrong `c=` is then a mismatch
        /// of certificates rather than a malformed message).
        binding: bool,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    Done,
}

impl ServerExchange {
    /// An exchange against `secret`. `channel_binding`: the server runs
    /// TLS and this is its certificate's [`tls_server_end_point`] data;
    /// SCRAM-SHA-256-PLUS is then offered, and a client that could bind but
    /// does not believe the server can is refused.
    ///
    /// [`tls_server_end_point`]: super::tls_server_end_point
    pub fn new(secret: &ScramSecret, channel_binding: Option<Vec<u8>>) -> ServerExchange {
        ServerExchange {
            secret: secret.clone(),
            channel_binding,
            state: ServerState::Initial,
            server_nonce: random_nonce(),
        }
    }

    /// The mechanisms to offer, preferred first:
    /// `["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]` with channel binding,
    /// `["SCRAM-SHA-256"]` without.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.channel_binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Takes the client's mechanism and client-first-message; returns the
    /// server-first-message (`r=<nonce>,s=<salt>,i=<iterations>`) to send
    /// in AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(ScramError::OutOfOrder(
                "the client-first-message was already received",
            ));
        }
        self.state = ServerState::Done;
        let plus = match mechanism {
            SCRAM_SHA_256_PLUS if self.channel_binding.is_some() => true,
            SCRAM_SHA_256 => false,
            _ => return Err(ScramError::InvalidMechanism),
        };
        let first = parse_client_first(data)?;
        let cbind_input = match (first.flag, plus) {
            (Gs2Flag::P, true) => {
                let mut input = GS2_TLS_SERVER_END_POINT.to_vec();
                input.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
                input
            }
            (Gs2Flag::P, false) => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256 without channel binding, \
                     but the SCRAM message includes channel binding data",
                ))
            }
            (_, true) => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256-PLUS, \
                     but the SCRAM message does not include channel binding data",
                ))
            }
            (Gs2Flag::Y, false) if self.channel_binding.is_some() => {
                return Err(ScramError::ChannelBindingDowngrade)
            }
            (Gs2Flag::Y, false) => GS2_UNUSED.to_vec(),
            (Gs2Flag::N, false) => GS2_NONE.to_vec(),
        };
        let mut nonce = first.nonce.to_vec();
        nonce.extend_from_slice(self.server_nonce.as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(
            format!(
                ",s={},i={}",
                BASE64.encode(&self.secret.salt),
                self.secret.iterations
            )
            .as_bytes(),
        );
        self.state = ServerState::SentFirst {
            cbind_input,
            binding: plus,
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes the client-final-message and checks channel binding, nonce and
    /// proof. On success: the server-final-message (`v=<signature>`) to
    /// send in AuthenticationSASLFinal, and the keys the client proved to
    /// hold (its ClientKey, recovered from the proof, and the secret's
    /// ServerKey), with which to log in to PostgreSQL as this role.
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, ScramKeys), ScramError> {
        let ServerState::SentFirst {
            cbind_input,
            binding,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::OutOfOrder(
                "a client-final-message must follow the server-first-message",
            ));
        };
        let last = parse_client_final(data)?;
        if last.channel_binding != BASE64.encode(&cbind_input).as_bytes() {
            return Err(if binding {
                ScramError::ChannelBindingMismatch
            } else {
                ScramError::Malformed(
                    "unexpected channel-binding attribute in the client-final-message",
                )
            });
        }
        if last.nonce != nonce.as_slice() {
            return Err(ScramError::Malformed("the nonce does not match"));
        }
        let auth_message = auth_message(&client_first_bare, &server_first, last.without_proof);
        let signature = hmac(&self.secret.stored_key, &auth_message);
        let client_key = xor(&last.proof, &signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.secret.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        let server_final = format!("v={}", BASE64.encode(server_signature)).into_bytes();
        let keys = ScramKeys {
            client_key,
            server_key: self.secret.server_key,
        };
        Ok((server_final, keys))
    }

    #[cfg(test)]
    pub(super) fn set_server_nonce(&mut self, nonce: &str) {
        self.server_nonce = nonce.to_string();
    }
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ServerState::Initial => "initial",
            ServerState::SentFirst { .. } => "sent server-first",
            ServerState::Done => "done",
        };
        f.debug_struct("ServerExchange")
            .field("secret", &self.secret)
            .field("channel_binding", &self.channel_binding.is_some())
            .field("state", &state)
            .finish()
    }
}
