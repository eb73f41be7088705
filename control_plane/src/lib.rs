//! The local control plane (docs/architecture.md §10).
//!
//! Knows the `.zenith/` repository directory ([`local_env`]) and starts,
//! stops and inspects the pageserver ([`pageserver`]), the walkeepers
//! ([`walkeeper`]) and computes ([`compute`]) as local processes ([`background_process`]); [`repo`] and
//! [`branches`] hold the operations behind `zenith init/start/stop` and
//! `zenith branch`. The [`console`] (a daemon of its own, `console`, run
//! and called by [`console_node`]) and the [`proxy`] process serve
//! endpoints to PostgreSQL clients;
//! [`monitoring`] runs Prometheus and a postgres_exporter per compute. The
//! `zenith` CLI is a thin layer over this crate.

pub mod background_process;
pub mod branches;
pub mod compute;
pub mod console;
pub mod console_node;
pub mod local_env;
pub mod monitoring;
pub mod pageserver;
pub mod progress;
pub mod proxy;
pub mod repo;
pub mod walkeeper;

/// `req` with `Authorization: <bearer>` when there is one (auth on).
pub fn with_bearer<B>(
    req: ureq::RequestBuilder<B>,
    bearer: Option<&str>,
) -> ureq::RequestBuilder<B> {
    match bearer {
        Some(v) => req.header("Authorization", v),
        None => req,
    }
}
