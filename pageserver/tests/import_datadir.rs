//! Import what initdb wrote (the real PostgreSQL 15 from tmp_install) and read
//! it back: every page of every relation fork, SLRU segments, relmapper files
//! and pg_control must equal the files on disk.

mod common;

use std::sync::Arc;

use common::initdb;

use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::pgdatadir_mapping::DatadirReader;
use pageserver::walredo::NativeOnlyRedoManager;
use postgres_ffi::relfile::{relation_segment_path, RelTag};
use postgres_ffi::slru::{slru_segment_filename, SlruKind};

#[test]
fn import_of_initdb_reads_back_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = initdb(dir.path());
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf::default(),
        Arc::new(NativeOnlyRedoManager),
    );
    let point = import_datadir(&tl, &pgdata).unwrap();
    assert!(point.end_lsn > point.checkpoint_lsn);
    assert_eq!(tl.last_record_lsn(), point.end_lsn);
    assert_eq!(tl.disk_consistent_lsn(), point.end_lsn);
    assert!(!tl.layer_files().is_empty());

    let r = DatadirReader::new(&tl, point.end_lsn);
    let dbs = r.list_dbs().unwrap();
    assert!(dbs.len() >= 4, "databases: {dbs:?}"); // global, template0, template1, postgres
    let mut pages = 0;
    for (&(spc, db), &has_relmap) in &dbs {
        assert!(has_relmap, "no relmapper file for {spc}/{db}");
        let dbdir = postgres_ffi::relfile::database_dir(spc, db);
        let relmap = std::fs::read(pgdata.join(&dbdir).join("pg_filenode.map")).unwrap();
        assert_eq!(r.relmap_file(spc, db).unwrap().unwrap(), relmap);
        for (relnode, forknum) in r.list_rels(spc, db).unwrap() {
            let rel = RelTag {
                spcnode: spc,
                dbnode: db,
                relnode,
                forknum,
            };
            let file =
                std::fs::read(pgdata.join(relation_segment_path(rel.rnode(), forknum, 0))).unwrap();
            let nblocks = r.rel_size(rel).unwrap().unwrap();
            assert_eq!(nblocks as usize * 8192, file.len(), "size of {rel}");
            for blk in 0..nblocks {
                let page = r.rel_page(rel, blk).unwrap();
                assert_eq!(
                    &page[..],
                    &file[blk as usize * 8192..(blk as usize + 1) * 8192],
                    "{rel} block {blk}"
                );
                pages += 1;
            }
        }
    }
    assert!(pages > 500, "only {pages} pages");
    let segs = r.list_slru_segments(SlruKind::Clog).unwrap();
    assert_eq!(segs, vec![0]);
    let clog = std::fs::read(pgdata.join("pg_xact").join(slru_segment_filename(0))).unwrap();
    assert_eq!(
        r.slru_segment_size(SlruKind::Clog, 0).unwrap() as usize * 8192,
        clog.len()
    );
    assert_eq!(
        &r.slru_page(SlruKind::Clog, 0, 0).unwrap()[..],
        &clog[..8192]
    );
    let control = std::fs::read(pgdata.join("global/pg_control")).unwrap();
    assert_eq!(r.control_file().unwrap(), control);

    // A second import into the same timeline is refused; a dirty cluster too.
    assert!(import_datadir(&tl, &pgdata).is_err());
}
