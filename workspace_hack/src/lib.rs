//! Feature unification for the workspace.
//!
//! Every member depends on this crate; its `Cargo.toml` lists third-party
//! dependencies with the union of the features any member asks for, so that
//! `cargo build -p X` and `cargo build` compile the same artifacts once.
//! It contains no code.
