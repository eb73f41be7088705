//! Why a SCRAM exchange or a secret was refused, with its SQLSTATE.

use crate::pq_proto::SqlState;

/// Why a SCRAM exchange or a secret was refused. [`ScramError::sql_state`]
/// is the SQLSTATE to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message that does not follow the SCRAM syntax or this exchange
    /// (08P01).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client chose a mechanism the server did not offer (08P01).
    #[error("client selected an invalid SASL authentication mechanism")]
    InvalidMechanism,
    /// A channel-binding type other than `tls-server-end-point` (08P01).
    #[error("unsupported SCRAM channel-binding type")]
    UnsupportedChannelBinding,
    /// An optional SCRAM feature PostgreSQL does not implement either:
    /// authorization identity, mandatory extensions (0A000).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The client supports channel binding but thinks the server does not,
    /// while the server offered it: someone may have removed
    /// SCRAM-SHA-256-PLUS from the offer (28000).
    #[error(
        "SCRAM channel binding negotiation error: the client supports channel binding \
         but thinks the server does not; this server does support channel binding"
    )]
    ChannelBindingDowngrade,
    /// The channel-binding data is not this server's certificate: the
    /// client's TLS connection ends somewhere else (28000).
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The client's proof does not match the secret: a wrong password
    /// (28P01).
    #[error("password authentication failed")]
    InvalidProof,
    /// The server's signature does not verify: it does not hold the secret
    /// of the keys the client logged in with (28000).
    #[error("the server's SCRAM signature does not verify: it does not know the role's secret")]
    InvalidServerSignature,
    /// The server ended the exchange with `e=<code>` (28P01 for
    /// `invalid-proof`, 28000 otherwise).
    #[error("the server refused SCRAM authentication: {0}")]
    ServerError(String),
    /// A stored secret that cannot be parsed (XX000: not the client's
    /// doing).
    #[error("invalid SCRAM secret: {0}")]
    InvalidSecret(&'static str),
    /// A message arrived at a step of the exchange where none is expected:
    /// after the end, after a failure, or out of order (08P01).
    #[error("unexpected SCRAM message: {0}")]
    OutOfOrder(&'static str),
}

impl ScramError {
    /// The SQLSTATE to report for this error.
    pub fn sql_state(&self) -> SqlState {
        match self {
            ScramError::Malformed(_)
            | ScramError::InvalidMechanism
            | ScramError::UnsupportedChannelBinding
            | ScramError::OutOfOrder(_) => SqlState::PROTOCOL_VIOLATION,
            ScramError::Unsupported(_) => SqlState::FEATURE_NOT_SUPPORTED,
            ScramError::ChannelBindingDowngrade
            | ScramError::ChannelBindingMismatch
            | ScramError::InvalidServerSignature => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            ScramError::InvalidProof => SqlState::INVALID_PASSWORD,
            ScramError::ServerError(code) if code == "invalid-proof" => SqlState::INVALID_PASSWORD,
            ScramError::ServerError(_) => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            ScramError::InvalidSecret(_) => SqlState::INTERNAL_ERROR,
        }
    }
}
