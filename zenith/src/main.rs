//! The `zenith` CLI: a thin layer over `control_plane`.
//!
//! The cluster commands (`init`, `start`, `stop`, `tenant`, `branch`, `pg`)
//! arrive with the control plane (issue 4). Until then the CLI only describes
//! itself; it never pretends to start anything.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "zenith",
    version,
    about = "Run a local Zenith cluster: PostgreSQL with storage separated from compute",
    long_about = "Run a local Zenith cluster: PostgreSQL with storage separated from compute.\n\n\
                  No cluster commands exist yet: init, start, stop, tenant, branch and pg arrive \
                  with the control plane. See README.md for what works today."
)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("zenith: no cluster commands exist yet (see `zenith --help` and README.md)");
    std::process::exit(2);
}
