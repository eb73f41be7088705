//! `pageserver_smgr_query_seconds{query}`: the latency of each kind of
//! pagestream request, measured by the page service from the request's
//! arrival (parsed) until its answer is ready (docs/monitoring.md).

use std::sync::LazyLock;
use std::time::Instant;

use zenith_metrics::Histogram;

use crate::pagestream::PagestreamRequestBody;

/// The pagestream request kinds, as the `query` label of
/// `pageserver_smgr_query_seconds` (PostgreSQL's smgr calls they serve).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SmgrQuery {
    GetPage,
    Nblocks,
    Exists,
    DbSize,
    GetSlruSegment,
}

impl SmgrQuery {
    const ALL: [SmgrQuery; 5] = [
        SmgrQuery::GetPage,
        SmgrQuery::Nblocks,
        SmgrQuery::Exists,
        SmgrQuery::DbSize,
        SmgrQuery::GetSlruSegment,
    ];

    pub(super) fn of(body: &PagestreamRequestBody) -> SmgrQuery {
        match body {
            PagestreamRequestBody::GetPage { .. } => SmgrQuery::GetPage,
            PagestreamRequestBody::Nblocks { .. } => SmgrQuery::Nblocks,
            PagestreamRequestBody::Exists { .. } => SmgrQuery::Exists,
            PagestreamRequestBody::DbSize { .. } => SmgrQuery::DbSize,
            PagestreamRequestBody::GetSlruSegment { .. } => SmgrQuery::GetSlruSegment,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SmgrQuery::GetPage => "get_page",
            SmgrQuery::Nblocks => "nblocks",
            SmgrQuery::Exists => "exists",
            SmgrQuery::DbSize => "db_size",
            SmgrQuery::GetSlruSegment => "get_slru_segment",
        }
    }

    /// Records one request of this kind that took from `started` until now.
    /// On the hot path: no allocation, no label lookup.
    pub(super) fn observe(self, started: Instant) {
        SMGR_QUERY_SECONDS[self as usize].observe(started.elapsed().as_secs_f64());
    }
}

/// `pageserver_smgr_query_seconds{query}`: from a pagestream request's
/// arrival (parsed) to its answer being ready, errors included. One handle
/// per kind, in [`SmgrQuery::ALL`] order; every kind is present from the
/// start (count 0).
static SMGR_QUERY_SECONDS: LazyLock<[Histogram; 5]> = LazyLock::new(|| {
    let vec = zenith_metrics::register_histogram_vec!(
            "pageserver_smgr_query_seconds",
            "Time to answer a pagestream request, by kind (get_page, nblocks, exists, db_size, get_slru_segment)",
            &["query"],
            zenith_metrics::LATENCY_BUCKETS_SECONDS.to_vec()
        )
        .expect("registering pageserver_smgr_query_seconds");
    SmgrQuery::ALL.map(|q| vec.with_label_values(&[q.label()]))
});

/// Registers `pageserver_smgr_query_seconds` now.
pub(super) fn register() {
    LazyLock::force(&SMGR_QUERY_SECONDS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smgr_query_kinds_have_their_own_histogram() {
        use PagestreamRequestBody as Req;
        let rel = postgres_ffi::relfile::RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 1259,
            forknum: 0,
        };
        let cases = [
            (Req::GetPage { rel, blkno: 0 }, "get_page"),
            (Req::Nblocks { rel }, "nblocks"),
            (Req::Exists { rel }, "exists"),
            (Req::DbSize { dbnode: 5 }, "db_size"),
        ];
        for (body, label) in cases {
            let kind = SmgrQuery::of(&body);
            assert_eq!(kind.label(), label);
            assert_eq!(SmgrQuery::ALL[kind as usize], kind);
            let before = SMGR_QUERY_SECONDS[kind as usize].get_sample_count();
            kind.observe(Instant::now());
            assert_eq!(
                SMGR_QUERY_SECONDS[kind as usize].get_sample_count(),
                before + 1
            );
        }
        let text = zenith_metrics::gather_text().unwrap();
        for label in [
            "get_page",
            "nblocks",
            "exists",
            "db_size",
            "get_slru_segment",
        ] {
            assert!(
                text.contains(&format!(
                    "pageserver_smgr_query_seconds_count{{query=\"{label}\"}}"
                )),
                "{label}: {text}"
            );
        }
    }
}
