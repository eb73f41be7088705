//! The load generator behind `pagebench`: N clients issue GetPage@LSN for
//! uniformly random blocks of a set of relations, each keeping up to D
//! requests in flight, and the latencies are summarized.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use postgres_ffi::pg_constants::MAIN_FORKNUM;
use postgres_ffi::relfile::RelTag;
use serde::Serialize;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::client::PagestreamClient;
use super::{PagestreamRequest, PagestreamRequestBody, PagestreamResponseBody};

/// When the benchmark stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchLimit {
    /// Issue requests for this long, then wait for the ones in flight.
    Duration(Duration),
    /// This many requests in total, spread evenly over the clients.
    Requests(u64),
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The page service, host:port.
    pub addr: String,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub clients: usize,
    /// Requests in flight per client.
    pub pipeline: usize,
    pub limit: BenchLimit,
    /// `None`: the latest version; `Some(lsn)`: the version at `lsn`.
    pub lsn: Option<Lsn>,
    /// Relations (main forks) whose blocks are read.
    pub rels: Vec<RelTag>,
}

/// Latencies in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencyReport {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub clients: usize,
    pub pipeline: usize,
    /// Relations read (those with at least one block) and their blocks.
    pub relations: usize,
    pub blocks: u64,
    /// Responses received, errors included.
    pub requests: u64,
    /// Error responses among them.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    pub latency_us: LatencyReport,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_us;
        writeln!(
            f,
            "{} clients x {} in flight, {} relations ({} blocks)",
            self.clients, self.pipeline, self.relations, self.blocks
        )?;
        writeln!(
            f,
            "{} requests ({} errors) in {:.3} s: {:.0} requests/s",
            self.requests, self.errors, self.elapsed_s, self.requests_per_s
        )?;
        write!(
            f,
            "latency (us): min {:.0}  mean {:.0}  p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
            l.min, l.mean, l.p50, l.p99, l.p99_9, l.max
        )?;
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst error: {e}")?;
        }
        Ok(())
    }
}

/// Parses `spc/db/rel[,spc/db/rel...]` (main forks).
pub fn parse_rels(s: &str) -> anyhow::Result<Vec<RelTag>> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let parts: Vec<&str> = r.split('/').collect();
            let [spc, db, rel] = parts[..] else {
                bail!("invalid relation {r:?}: expected spcnode/dbnode/relnode");
            };
            let num = |v: &str| {
                v.parse::<u32>()
                    .with_context(|| format!("invalid relation {r:?}: {v:?} is not an OID"))
            };
            Ok(RelTag {
                spcnode: num(spc)?,
                dbnode: num(db)?,
                relnode: num(rel)?,
                forknum: MAIN_FORKNUM,
            })
        })
        .collect()
}

/// SplitMix64: small, fast, good enough to pick blocks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The relations and where each one's blocks start in the global numbering.
struct Blocks {
    rels: Vec<(RelTag, u32)>,
    /// `starts[i]`: blocks of the relations before `rels[i]`.
    starts: Vec<u64>,
    total: u64,
}

impl Blocks {
    fn pick(&self, rng: &mut Rng) -> (RelTag, u32) {
        let i = rng.next() % self.total;
        let r = self.starts.partition_point(|&s| s <= i) - 1;
        (self.rels[r].0, (i - self.starts[r]) as u32)
    }
}

#[derive(Default)]
struct ClientStats {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

fn lsns(lsn: Option<Lsn>) -> (Lsn, Lsn) {
    match lsn {
        None => (Lsn::MAX, Lsn(0)),
        Some(l) => (l, l),
    }
}

/// Runs the benchmark. Fails if a connection fails or a relation's size
/// cannot be read; error responses to GetPage are counted, not fatal.
pub async fn run_bench(cfg: &BenchConfig) -> anyhow::Result<BenchReport> {
    if cfg.clients == 0 || cfg.pipeline == 0 {
        bail!("--clients and --pipeline must be at least 1");
    }
    if cfg.rels.is_empty() {
        bail!("no relations given");
    }
    let (request_lsn, not_modified_since) = lsns(cfg.lsn);
    // Relation sizes.
    let mut c = PagestreamClient::connect(&cfg.addr, cfg.tenant_id, cfg.timeline_id).await?;
    let mut blocks = Blocks {
        rels: Vec::new(),
        starts: Vec::new(),
        total: 0,
    };
    for (i, rel) in cfg.rels.iter().enumerate() {
        let req = PagestreamRequest {
            reqid: i as u64,
            request_lsn,
            not_modified_since,
            body: PagestreamRequestBody::Nblocks { rel: *rel },
        };
        match c.request(&req).await?.body {
            PagestreamResponseBody::Nblocks(0) => {}
            PagestreamResponseBody::Nblocks(n) => {
                blocks.rels.push((*rel, n));
                blocks.starts.push(blocks.total);
                blocks.total += u64::from(n);
            }
            PagestreamResponseBody::Error(e) => bail!("nblocks of {rel}: {e}"),
            other => bail!("nblocks of {rel}: unexpected response {other:?}"),
        }
    }
    c.close().await?;
    if blocks.total == 0 {
        bail!("the relations have no blocks");
    }

    let mut clients = Vec::with_capacity(cfg.clients);
    for _ in 0..cfg.clients {
        clients.push(PagestreamClient::connect(&cfg.addr, cfg.tenant_id, cfg.timeline_id).await?);
    }
    let blocks = std::sync::Arc::new(blocks);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.clients);
    for (i, client) in clients.into_iter().enumerate() {
        let quota = match cfg.limit {
            BenchLimit::Requests(n) => {
                let (per, rest) = (n / cfg.clients as u64, n % cfg.clients as u64);
                Some(per + u64::from((i as u64) < rest))
            }
            BenchLimit::Duration(_) => None,
        };
        let deadline = match cfg.limit {
            BenchLimit::Duration(d) => Some(start + d),
            BenchLimit::Requests(_) => None,
        };
        let seed = rand::random::<u64>() ^ i as u64;
        let (blocks, depth) = (std::sync::Arc::clone(&blocks), cfg.pipeline);
        tasks.push(tokio::spawn(async move {
            let lsns = (request_lsn, not_modified_since);
            run_client(client, &blocks, depth, quota, deadline, lsns, Rng(seed)).await
        }));
    }
    let mut all = ClientStats::default();
    for t in tasks {
        let s = t.await??;
        all.latencies.extend(s.latencies);
        all.errors += s.errors;
        all.first_error = all.first_error.or(s.first_error);
    }
    let elapsed = start.elapsed();
    let requests = all.latencies.len() as u64;
    Ok(BenchReport {
        clients: cfg.clients,
        pipeline: cfg.pipeline,
        relations: blocks.rels.len(),
        blocks: blocks.total,
        requests,
        errors: all.errors,
        first_error: all.first_error,
        elapsed_s: elapsed.as_secs_f64(),
        requests_per_s: requests as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_us: summarize(all.latencies),
    })
}

async fn run_client(
    mut c: PagestreamClient,
    blocks: &Blocks,
    depth: usize,
    quota: Option<u64>,
    deadline: Option<Instant>,
    (request_lsn, not_modified_since): (Lsn, Lsn),
    mut rng: Rng,
) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats::default();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(depth);
    let mut issued = 0u64;
    loop {
        let now = Instant::now();
        while in_flight.len() < depth
            && quota.is_none_or(|q| issued < q)
            && deadline.is_none_or(|d| now < d)
        {
            let (rel, blkno) = blocks.pick(&mut rng);
            c.queue(&PagestreamRequest {
                reqid: issued,
                request_lsn,
                not_modified_since,
                body: PagestreamRequestBody::GetPage { rel, blkno },
            })?;
            in_flight.push_back((issued, now));
            issued += 1;
        }
        let Some((reqid, sent)) = in_flight.pop_front() else {
            break;
        };
        c.flush().await?;
        let resp = c.recv().await?;
        stats.latencies.push(sent.elapsed());
        if resp.reqid != reqid {
            bail!("response for reqid {} while expecting {reqid}", resp.reqid);
        }
        match resp.body {
            PagestreamResponseBody::GetPage(_) => {}
            PagestreamResponseBody::Error(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e);
            }
            other => bail!("unexpected response to get_page: {other:?}"),
        }
    }
    c.close().await?;
    Ok(stats)
}

fn summarize(mut lat: Vec<Duration>) -> LatencyReport {
    if lat.is_empty() {
        return LatencyReport::default();
    }
    lat.sort_unstable();
    let us = |d: Duration| d.as_nanos() as f64 / 1e3;
    let pct = |p: f64| {
        let rank = (p * lat.len() as f64).ceil() as usize;
        us(lat[rank.clamp(1, lat.len()) - 1])
    };
    let sum: Duration = lat.iter().sum();
    LatencyReport {
        min: us(lat[0]),
        mean: us(sum) / lat.len() as f64,
        p50: pct(0.50),
        p99: pct(0.99),
        p99_9: pct(0.999),
        max: us(lat[lat.len() - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rels_parse_and_bad_ones_are_rejected() {
        let r = parse_rels("1663/5/1259, 1664/0/1262,").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].spcnode, r[0].dbnode, r[0].relnode), (1663, 5, 1259));
        assert_eq!(r[1].forknum, MAIN_FORKNUM);
        assert!(parse_rels("1663/5").is_err());
        assert!(parse_rels("1663/5/x").is_err());
    }

    #[test]
    fn percentiles_pick_the_right_ranks() {
        let lat: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let l = summarize(lat);
        assert_eq!(
            (l.min, l.p50, l.p99, l.p99_9, l.max),
            (1.0, 500.0, 990.0, 999.0, 1000.0)
        );
        assert!((l.mean - 500.5).abs() < 1e-6);
        assert_eq!(summarize(vec![]), LatencyReport::default());
    }

    #[test]
    fn blocks_are_picked_from_every_relation_in_range() {
        let rel = |relnode| RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode,
            forknum: 0,
        };
        let b = Blocks {
            rels: vec![(rel(1), 3), (rel(2), 1), (rel(3), 5)],
            starts: vec![0, 3, 4],
            total: 9,
        };
        let mut rng = Rng(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (r, blk) = b.pick(&mut rng);
            let n = b.rels.iter().find(|(t, _)| *t == r).unwrap().1;
            assert!(blk < n);
            seen.insert((r.relnode, blk));
        }
        assert_eq!(seen.len(), 9);
    }
}
