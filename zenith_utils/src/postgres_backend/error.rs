//! What ends a query or a connection, and how it is reported.

use std::io;

use crate::pq_proto::{ProtocolError, SqlState};

/// What ends a query or a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The query failed; the session continues (ERROR, ReadyForQuery).
    #[error("{message}")]
    Query { code: SqlState, message: String },
    /// The session ends with this FATAL error.
    #[error("{message}")]
    Fatal { code: SqlState, message: String },
    /// The server is shutting down: FATAL 57P01, then close.
    #[error("the server is shutting down")]
    Shutdown,
    /// The client went away (EOF, Terminate, reset): close quietly.
    #[error("the client closed the connection")]
    ClientGone,
    /// The client's bytes are not the protocol: FATAL with its SQLSTATE.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Reading or writing the socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl HandlerError {
    /// A failed query with its SQLSTATE.
    pub fn query(code: SqlState, message: impl Into<String>) -> HandlerError {
        HandlerError::Query {
            code,
            message: message.into(),
        }
    }

    /// A connection-ending error with its SQLSTATE.
    pub fn fatal(code: SqlState, message: impl Into<String>) -> HandlerError {
        HandlerError::Fatal {
            code,
            message: message.into(),
        }
    }
}
