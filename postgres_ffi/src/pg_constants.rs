//! Constants of PostgreSQL 15's on-disk and WAL formats.
//!
//! Values are taken from the PostgreSQL 15 headers named next to each group;
//! they are part of the format and must not change.

/// Size of a relation data page (`BLCKSZ`).
pub const BLCKSZ: u16 = 8192;
/// `InvalidBlockNumber`: never a real block (the largest is `0xFFFFFFFE`).
pub const INVALID_BLOCK_NUMBER: u32 = 0xFFFF_FFFF;
/// Size of a WAL page (`XLOG_BLCKSZ`).
pub const XLOG_BLCKSZ: usize = 8192;
/// Default WAL segment size (`DEFAULT_XLOG_SEG_SIZE`).
pub const WAL_SEGMENT_SIZE: usize = 16 * 1024 * 1024;
/// Blocks per relation segment file (`RELSEG_SIZE`, 1 GiB of 8 KiB pages).
pub const RELSEG_SIZE: u32 = 1024 * 1024 * 1024 / BLCKSZ as u32;
/// Major version these formats belong to.
pub const PG_MAJORVERSION: u32 = 15;
/// `MAXIMUM_ALIGNOF` on the platforms we support.
pub const MAXALIGN: usize = 8;

// ---------------------------------------------------------------- xlog_internal.h
/// `XLOG_PAGE_MAGIC` of PostgreSQL 15.
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;
/// The first record on the page continues one from the previous page.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// The page has a long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// The backup blocks on this page are optional for recovery.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// A record that was not completely written was replaced here.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// All defined page header flags.
pub const XLP_ALL_FLAGS: u16 = 0x000F;
/// `SizeOfXLogShortPHD`.
pub const XLOG_SIZE_OF_XLOG_SHORT_PHD: usize = 24;
/// `SizeOfXLogLongPHD`.
pub const XLOG_SIZE_OF_XLOG_LONG_PHD: usize = 40;

// ---------------------------------------------------------------- xlogrecord.h
/// `SizeOfXLogRecord`.
pub const XLOG_SIZE_OF_XLOG_RECORD: usize = 24;
/// Offset of `xl_crc` within `XLogRecord`.
pub const XLOG_RECORD_CRC_OFFS: usize = 20;
/// `XLogRecordMaxSize`: PostgreSQL never writes a larger record.
pub const XLOG_RECORD_MAX_SIZE: u32 = 1020 * 1024 * 1024;
/// Bits of `xl_info` reserved for the WAL machinery.
pub const XLR_INFO_MASK: u8 = 0x0F;
/// Bits of `xl_info` for the resource manager.
pub const XLR_RMGR_INFO_MASK: u8 = 0xF0;
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;
pub const XLR_CHECK_CONSISTENCY: u8 = 0x02;
/// Largest block id of a block reference (`XLR_MAX_BLOCK_ID`).
pub const XLR_MAX_BLOCK_ID: u8 = 32;
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;

pub const BKPBLOCK_FORK_MASK: u8 = 0x0F;
pub const BKPBLOCK_FLAG_MASK: u8 = 0xF0;
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
pub const BKPBLOCK_WILL_INIT: u8 = 0x40;
pub const BKPBLOCK_SAME_REL: u8 = 0x80;

pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
pub const BKPIMAGE_APPLY: u8 = 0x02;
pub const BKPIMAGE_COMPRESS_PGLZ: u8 = 0x04;
pub const BKPIMAGE_COMPRESS_LZ4: u8 = 0x08;
pub const BKPIMAGE_COMPRESS_ZSTD: u8 = 0x10;
pub const BKPIMAGE_COMPRESSED_MASK: u8 =
    BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;

// ---------------------------------------------------------------- rmgrlist.h
pub const RM_XLOG_ID: u8 = 0;
pub const RM_XACT_ID: u8 = 1;
pub const RM_SMGR_ID: u8 = 2;
pub const RM_CLOG_ID: u8 = 3;
pub const RM_DBASE_ID: u8 = 4;
pub const RM_TBLSPC_ID: u8 = 5;
pub const RM_MULTIXACT_ID: u8 = 6;
pub const RM_RELMAP_ID: u8 = 7;
pub const RM_STANDBY_ID: u8 = 8;
pub const RM_HEAP2_ID: u8 = 9;
pub const RM_HEAP_ID: u8 = 10;
pub const RM_BTREE_ID: u8 = 11;
pub const RM_HASH_ID: u8 = 12;
pub const RM_GIN_ID: u8 = 13;
pub const RM_GIST_ID: u8 = 14;
pub const RM_SEQ_ID: u8 = 15;
pub const RM_SPGIST_ID: u8 = 16;
pub const RM_BRIN_ID: u8 = 17;
pub const RM_COMMIT_TS_ID: u8 = 18;
pub const RM_REPLORIGIN_ID: u8 = 19;
pub const RM_GENERIC_ID: u8 = 20;
pub const RM_LOGICALMSG_ID: u8 = 21;
/// Largest built-in resource manager id.
pub const RM_MAX_BUILTIN_ID: u8 = RM_LOGICALMSG_ID;
/// Custom resource managers (PostgreSQL 15) use ids 128..=255.
pub const RM_MIN_CUSTOM_ID: u8 = 128;

// ---------------------------------------------------------------- pg_control.h (XLOG rmgr)
pub const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
pub const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
pub const XLOG_NOOP: u8 = 0x20;
pub const XLOG_NEXTOID: u8 = 0x30;
pub const XLOG_SWITCH: u8 = 0x40;
pub const XLOG_BACKUP_END: u8 = 0x50;
pub const XLOG_PARAMETER_CHANGE: u8 = 0x60;
pub const XLOG_RESTORE_POINT: u8 = 0x70;
pub const XLOG_FPW_CHANGE: u8 = 0x80;
pub const XLOG_END_OF_RECOVERY: u8 = 0x90;
pub const XLOG_FPI_FOR_HINT: u8 = 0xA0;
pub const XLOG_FPI: u8 = 0xB0;
pub const XLOG_OVERWRITE_CONTRECORD: u8 = 0xD0;

// ---------------------------------------------------------------- xact.h
pub const XLOG_XACT_COMMIT: u8 = 0x00;
pub const XLOG_XACT_PREPARE: u8 = 0x10;
pub const XLOG_XACT_ABORT: u8 = 0x20;
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
pub const XLOG_XACT_ASSIGNMENT: u8 = 0x50;
pub const XLOG_XACT_INVALIDATIONS: u8 = 0x60;
pub const XLOG_XACT_OPMASK: u8 = 0x70;
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;

pub const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
pub const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
pub const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
pub const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
pub const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
pub const XACT_XINFO_HAS_ORIGIN: u32 = 1 << 5;
pub const XACT_XINFO_HAS_AE_LOCKS: u32 = 1 << 6;
pub const XACT_XINFO_HAS_GID: u32 = 1 << 7;
pub const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;
/// `sizeof(SharedInvalidationMessage)`.
pub const SIZE_OF_SHARED_INVALIDATION_MESSAGE: usize = 16;
/// `sizeof(xl_xact_stats_item)`.
pub const SIZE_OF_XACT_STATS_ITEM: usize = 12;

// ---------------------------------------------------------------- storage_xlog.h
pub const XLOG_SMGR_CREATE: u8 = 0x10;
pub const XLOG_SMGR_TRUNCATE: u8 = 0x20;
pub const SMGR_TRUNCATE_HEAP: u32 = 0x0001;
pub const SMGR_TRUNCATE_VM: u32 = 0x0002;
pub const SMGR_TRUNCATE_FSM: u32 = 0x0004;

// ---------------------------------------------------------------- dbcommands_xlog.h
pub const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
pub const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
pub const XLOG_DBASE_DROP: u8 = 0x20;

// ---------------------------------------------------------------- tablespace.h
pub const XLOG_TBLSPC_CREATE: u8 = 0x00;
pub const XLOG_TBLSPC_DROP: u8 = 0x10;

// ---------------------------------------------------------------- clog.h, commit_ts.h
pub const CLOG_ZEROPAGE: u8 = 0x00;
pub const CLOG_TRUNCATE: u8 = 0x10;
pub const COMMIT_TS_ZEROPAGE: u8 = 0x00;
pub const COMMIT_TS_TRUNCATE: u8 = 0x10;

// ---------------------------------------------------------------- multixact.h
pub const XLOG_MULTIXACT_ZERO_OFF_PAGE: u8 = 0x00;
pub const XLOG_MULTIXACT_ZERO_MEM_PAGE: u8 = 0x10;
pub const XLOG_MULTIXACT_CREATE_ID: u8 = 0x20;
pub const XLOG_MULTIXACT_TRUNCATE_ID: u8 = 0x30;

// ---------------------------------------------------------------- relmapper.h
pub const XLOG_RELMAP_UPDATE: u8 = 0x00;

// ---------------------------------------------------------------- standbydefs.h
pub const XLOG_STANDBY_LOCK: u8 = 0x00;
pub const XLOG_RUNNING_XACTS: u8 = 0x10;
pub const XLOG_INVALIDATIONS: u8 = 0x20;

// ---------------------------------------------------------------- heapam_xlog.h
pub const XLOG_HEAP_INSERT: u8 = 0x00;
pub const XLOG_HEAP_DELETE: u8 = 0x10;
pub const XLOG_HEAP_UPDATE: u8 = 0x20;
pub const XLOG_HEAP_TRUNCATE: u8 = 0x30;
pub const XLOG_HEAP_HOT_UPDATE: u8 = 0x40;
pub const XLOG_HEAP_CONFIRM: u8 = 0x50;
pub const XLOG_HEAP_LOCK: u8 = 0x60;
pub const XLOG_HEAP_INPLACE: u8 = 0x70;
pub const XLOG_HEAP_OPMASK: u8 = 0x70;
pub const XLOG_HEAP_INIT_PAGE: u8 = 0x80;
pub const XLOG_HEAP2_REWRITE: u8 = 0x00;
pub const XLOG_HEAP2_PRUNE: u8 = 0x10;
pub const XLOG_HEAP2_VACUUM: u8 = 0x20;
pub const XLOG_HEAP2_FREEZE_PAGE: u8 = 0x30;
pub const XLOG_HEAP2_VISIBLE: u8 = 0x40;
pub const XLOG_HEAP2_MULTI_INSERT: u8 = 0x50;
pub const XLOG_HEAP2_LOCK_UPDATED: u8 = 0x60;
pub const XLOG_HEAP2_NEW_CID: u8 = 0x70;

pub const XLH_INSERT_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
pub const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
pub const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED: u8 = 1 << 1;
pub const XLH_DELETE_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
pub const XLH_LOCK_ALL_FROZEN_CLEARED: u8 = 0x01;

// ---------------------------------------------------------------- visibilitymap.h
pub const VISIBILITYMAP_ALL_VISIBLE: u8 = 0x01;
pub const VISIBILITYMAP_ALL_FROZEN: u8 = 0x02;
pub const VISIBILITYMAP_VALID_BITS: u8 = 0x03;
/// Heap blocks covered by one visibility-map page (2 bits per heap block).
pub const HEAPBLOCKS_PER_VM_PAGE: u32 = (BLCKSZ as u32 - SIZE_OF_PAGE_HEADER as u32) * 4;

// ---------------------------------------------------------------- relpath.h
pub const MAIN_FORKNUM: u8 = 0;
pub const FSM_FORKNUM: u8 = 1;
pub const VISIBILITYMAP_FORKNUM: u8 = 2;
pub const INIT_FORKNUM: u8 = 3;
pub const MAX_FORKNUM: u8 = INIT_FORKNUM;

// ---------------------------------------------------------------- pg_tablespace_d.h
pub const DEFAULTTABLESPACE_OID: u32 = 1663;
pub const GLOBALTABLESPACE_OID: u32 = 1664;

// ---------------------------------------------------------------- bufpage.h
/// `SizeOfPageHeaderData`.
pub const SIZE_OF_PAGE_HEADER: u16 = 24;
pub const PG_PAGE_LAYOUT_VERSION: u8 = 4;
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
pub const PD_PAGE_FULL: u16 = 0x0002;
pub const PD_ALL_VISIBLE: u16 = 0x0004;

// ---------------------------------------------------------------- transam.h
pub const INVALID_TRANSACTION_ID: u32 = 0;
pub const BOOTSTRAP_TRANSACTION_ID: u32 = 1;
pub const FROZEN_TRANSACTION_ID: u32 = 2;
pub const FIRST_NORMAL_TRANSACTION_ID: u32 = 3;
pub const FIRST_BOOTSTRAP_OBJECT_ID: u32 = 12000;
pub const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

// ---------------------------------------------------------------- clog.c, subtrans.c, multixact.c
/// Transactions per CLOG page (2 status bits each).
pub const CLOG_XACTS_PER_BYTE: u32 = 4;
pub const CLOG_XACTS_PER_PAGE: u32 = BLCKSZ as u32 * CLOG_XACTS_PER_BYTE;
pub const CLOG_BITS_PER_XACT: u8 = 2;
pub const TRANSACTION_STATUS_IN_PROGRESS: u8 = 0x00;
pub const TRANSACTION_STATUS_COMMITTED: u8 = 0x01;
pub const TRANSACTION_STATUS_ABORTED: u8 = 0x02;
pub const TRANSACTION_STATUS_SUB_COMMITTED: u8 = 0x03;
/// SLRU pages per segment file (`SLRU_PAGES_PER_SEGMENT`).
pub const SLRU_PAGES_PER_SEGMENT: u32 = 32;
/// `sizeof(MultiXactOffset)`.
pub const MULTIXACT_OFFSETS_PER_PAGE: u32 = BLCKSZ as u32 / 4;
/// Members are stored in groups of 4 with one flag byte each (`MULTIXACT_MEMBERGROUP_SIZE` = 20).
pub const MULTIXACT_MEMBERS_PER_MEMBERGROUP: u32 = 4;
pub const MULTIXACT_MEMBERGROUP_SIZE: u32 = 4 * MULTIXACT_MEMBERS_PER_MEMBERGROUP + 4;
pub const MULTIXACT_MEMBERGROUPS_PER_PAGE: u32 = BLCKSZ as u32 / MULTIXACT_MEMBERGROUP_SIZE;
pub const MULTIXACT_MEMBERS_PER_PAGE: u32 =
    MULTIXACT_MEMBERGROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_MEMBERGROUP;
pub const MXACT_MEMBER_BITS_PER_XACT: u32 = 8;
pub const MXACT_MEMBER_FLAGS_PER_BYTE: u32 = 1;
/// `sizeof(CommitTimestampEntry)` = TimestampTz + RepOriginId.
pub const SIZE_OF_COMMIT_TIMESTAMP_ENTRY: u32 = 10;
pub const COMMIT_TS_XACTS_PER_PAGE: u32 = BLCKSZ as u32 / SIZE_OF_COMMIT_TIMESTAMP_ENTRY;

// ---------------------------------------------------------------- relmapper.c, pg_control.h
/// Size of a `pg_filenode.map` file (`RELMAPPER_FILESIZE`).
pub const RELMAPPER_FILESIZE: usize = 512;
/// `RELMAPPER_FILEMAGIC`.
pub const RELMAPPER_FILEMAGIC: u32 = 0x592717;
/// Size of `global/pg_control` on disk (`PG_CONTROL_FILE_SIZE`).
pub const PG_CONTROL_FILE_SIZE: usize = 8192;
pub const PG_CONTROL_VERSION: u32 = 1300;
pub const CATALOG_VERSION_NO: u32 = 202209061;
/// `TWOPHASE_MAGIC` of PostgreSQL 15.
pub const TWOPHASE_MAGIC: u32 = 0x57F94534;

/// Postgres epoch (2000-01-01) in seconds after the Unix epoch.
pub const POSTGRES_EPOCH_UNIX_SECS: i64 = 946_684_800;
