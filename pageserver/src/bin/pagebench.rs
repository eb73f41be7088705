//! `pagebench`: GetPage@LSN load against a running page service.
//!
//! ```text
//! pagebench --page-service 127.0.0.1:64000 --tenant T --timeline TL \
//!     --rels 1663/5/1259,1663/5/1249 [--clients 4] [--pipeline 8] \
//!     [--duration 10s | --requests 100000] [--lsn latest|X/Y] [--json]
//! ```
//!
//! Each client reads uniformly random blocks of the main forks of `--rels`
//! (sizes fetched with nblocks first), keeping `--pipeline` requests in
//! flight. Prints requests/s and latency percentiles, as text or as one JSON
//! object. Exits with status 1 if any request got an error response.
//! The work is done by `pageserver::pagestream::bench::run_bench`.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pageserver::pagestream::bench::{parse_rels, run_bench, BenchConfig, BenchLimit};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::logging::{self, LogFormat};
use zenith_utils::lsn::Lsn;

#[derive(Parser, Debug)]
#[command(about = "GetPage@LSN benchmark against a pageserver's page service")]
struct Args {
    /// Address of the page service.
    #[arg(long, default_value = "127.0.0.1:64000")]
    page_service: String,
    #[arg(long)]
    tenant: TenantId,
    #[arg(long)]
    timeline: TimelineId,
    /// Main-fork relations to read, as spcnode/dbnode/relnode[,...].
    #[arg(long)]
    rels: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// How long to run, e.g. 10s (default when --requests is not given).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Total requests over all clients.
    #[arg(long)]
    requests: Option<u64>,
    /// The version to read: latest, or an LSN X/Y.
    #[arg(long, default_value = "latest")]
    lsn: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(LogFormat::Plain, "warn")?;
    let lsn = match args.lsn.as_str() {
        "latest" => None,
        s => Some(
            s.parse::<Lsn>()
                .with_context(|| format!("--lsn {s:?}: expected latest or X/Y"))?,
        ),
    };
    let limit = match (args.requests, args.duration) {
        (Some(n), _) => BenchLimit::Requests(n),
        (None, d) => BenchLimit::Duration(d.unwrap_or(Duration::from_secs(10))),
    };
    let cfg = BenchConfig {
        addr: args.page_service,
        tenant_id: args.tenant,
        timeline_id: args.timeline,
        clients: args.clients,
        pipeline: args.pipeline,
        limit,
        lsn,
        rels: parse_rels(&args.rels)?,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(run_bench(&cfg))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    if report.errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
