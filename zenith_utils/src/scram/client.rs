//! The client side of SCRAM-SHA-256 with keys instead of a password:
//! [`ClientExchange`].

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::crypto::{auth_message, hmac, random_nonce, sha256, xor};
use super::error::ScramError;
use super::messages::{parse_server_final, parse_server_first, ServerFinal, GS2_NONE};
use super::secret::ScramKeys;

/// The client side of SCRAM-SHA-256 with [`ScramKeys`] instead of a
/// password, without channel binding: [`client_first`] for the
/// SASLInitialResponse (mechanism [`SCRAM_SHA_256`]), [`server_first`] with
/// the AuthenticationSASLContinue data, [`server_final`] with the
/// AuthenticationSASLFinal data. Authentication has succeeded only if
/// [`server_final`] returns `Ok`.
///
/// [`client_first`]: ClientExchange::client_first
/// [`server_first`]: ClientExchange::server_first
/// [`server_final`]: ClientExchange::server_final
/// [`SCRAM_SHA_256`]: super::SCRAM_SHA_256
pub struct ClientExchange {
    pub(super) keys: ScramKeys,
    pub(super) client_nonce: String,
    state: ClientState,
}

enum ClientState {
    Initial,
    SentFinal { auth_message: Vec<u8> },
    Done,
}

impl ClientExchange {
    /// An exchange that logs in with `keys` (a fresh random nonce).
    pub fn with_keys(keys: ScramKeys) -> ClientExchange {
        ClientExchange {
            keys,
            client_nonce: random_nonce(),
            state: ClientState::Initial,
        }
    }

    /// The client-first-message, `n,,n=,r=<nonce>` (an empty user name, as
    /// libpq: PostgreSQL takes it from the startup packet).
    pub fn client_first(&self) -> Vec<u8> {
        let mut m = GS2_NONE.to_vec();
        m.extend_from_slice(self.client_first_bare().as_bytes());
        m
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.client_nonce)
    }

    /// Takes the server-first-message; returns the client-final-message
    /// (`c=biws,r=<nonce>,p=<proof>`). The salt and iteration count are
    /// checked for form only: the keys already embody them.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ClientState::Initial) {
            return Err(ScramError::OutOfOrder(
                "the server-first-message was already received",
            ));
        }
        self.state = ClientState::Done;
        let nonce = parse_server_first(data)?;
        if nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(self.client_nonce.as_bytes())
        {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend the client's",
            ));
        }
        let mut without_proof = format!("c={},r=", BASE64.encode(GS2_NONE)).into_bytes();
        without_proof.extend_from_slice(nonce);
        let auth_message = auth_message(self.client_first_bare().as_bytes(), data, &without_proof);
        let stored_key = sha256(&self.keys.client_key);
        let proof = xor(&self.keys.client_key, &hmac(&stored_key, &auth_message));
        let mut client_final = without_proof;
        client_final.extend_from_slice(format!(",p={}", BASE64.encode(proof)).as_bytes());
        self.state = ClientState::SentFinal { auth_message };
        Ok(client_final)
    }

    /// Takes the server-final-message and checks the server's signature
    /// (`v=`); an `e=` error from the server is [`ScramError::ServerError`].
    pub fn server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal { auth_message } = &self.state else {
            return Err(ScramError::OutOfOrder(
                "a server-final-message must follow the client-final-message",
            ));
        };
        let signature = match parse_server_final(data)? {
            ServerFinal::Error(e) => return Err(ScramError::ServerError(e)),
            ServerFinal::Verifier(v) => v,
        };
        let expected = hmac(&self.keys.server_key, auth_message);
        if bool::from(expected.ct_eq(&signature)) {
            Ok(())
        } else {
            Err(ScramError::InvalidServerSignature)
        }
    }

    #[cfg(test)]
    pub(super) fn set_client_nonce(&mut self, nonce: &str) {
        self.client_nonce = nonce.to_string();
    }
}

impl fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::Initial => "initial",
            ClientState::SentFinal { .. } => "sent client-final",
            ClientState::Done => "done",
        };
        f.debug_struct("ClientExchange")
            .field("keys", &self.keys)
            .field("state", &state)
            .finish()
    }
}
