//! Names of resource managers and record types, exactly as PostgreSQL 15's
//! `rmgrlist.h` and the `*_identify` functions in `rmgrdesc/` spell them (and
//! so as `pg_waldump` prints them).

use crate::pg_constants::*;

/// Resource manager name (`rm_name`), or `None` for an unknown id.
pub fn rmgr_name(rmid: u8) -> Option<&'static str> {
    const NAMES: [&str; 22] = [
        "XLOG",
        "Transaction",
        "Storage",
        "CLOG",
        "Database",
        "Tablespace",
        "MultiXact",
        "RelMap",
        "Standby",
        "Heap2",
        "Heap",
        "Btree",
        "Hash",
        "Gin",
        "Gist",
        "Sequence",
        "SPGist",
        "BRIN",
        "CommitTs",
        "ReplicationOrigin",
        "Generic",
        "LogicalMessage",
    ];
    NAMES.get(rmid as usize).copied()
}

/// Record type name for (`rmid`, `xl_info`), as `rm_identify` returns it;
/// `None` where PostgreSQL returns NULL (pg_waldump prints `UNKNOWN (%x)`).
pub fn record_identify(rmid: u8, info: u8) -> Option<&'static str> {
    let i = info & !XLR_INFO_MASK;
    Some(match rmid {
        RM_XLOG_ID => match i {
            XLOG_CHECKPOINT_SHUTDOWN => "CHECKPOINT_SHUTDOWN",
            XLOG_CHECKPOINT_ONLINE => "CHECKPOINT_ONLINE",
            XLOG_NOOP => "NOOP",
            XLOG_NEXTOID => "NEXTOID",
            XLOG_SWITCH => "SWITCH",
            XLOG_BACKUP_END => "BACKUP_END",
            XLOG_PARAMETER_CHANGE => "PARAMETER_CHANGE",
            XLOG_RESTORE_POINT => "RESTORE_POINT",
            XLOG_FPW_CHANGE => "FPW_CHANGE",
            XLOG_END_OF_RECOVERY => "END_OF_RECOVERY",
            XLOG_OVERWRITE_CONTRECORD => "OVERWRITE_CONTRECORD",
            XLOG_FPI => "FPI",
            XLOG_FPI_FOR_HINT => "FPI_FOR_HINT",
            _ => return None,
        },
        RM_XACT_ID => match info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT => "COMMIT",
            XLOG_XACT_PREPARE => "PREPARE",
            XLOG_XACT_ABORT => "ABORT",
            XLOG_XACT_COMMIT_PREPARED => "COMMIT_PREPARED",
            XLOG_XACT_ABORT_PREPARED => "ABORT_PREPARED",
            XLOG_XACT_ASSIGNMENT => "ASSIGNMENT",
            XLOG_XACT_INVALIDATIONS => "INVALIDATION",
            _ => return None,
        },
        RM_SMGR_ID => match i {
            XLOG_SMGR_CREATE => "CREATE",
            XLOG_SMGR_TRUNCATE => "TRUNCATE",
            _ => return None,
        },
        RM_CLOG_ID => match i {
            CLOG_ZEROPAGE => "ZEROPAGE",
            CLOG_TRUNCATE => "TRUNCATE",
            _ => return None,
        },
        RM_DBASE_ID => match i {
            XLOG_DBASE_CREATE_FILE_COPY => "CREATE_FILE_COPY",
            XLOG_DBASE_CREATE_WAL_LOG => "CREATE_WAL_LOG",
            XLOG_DBASE_DROP => "DROP",
            _ => return None,
        },
        RM_TBLSPC_ID => match i {
            XLOG_TBLSPC_CREATE => "CREATE",
            XLOG_TBLSPC_DROP => "DROP",
            _ => return None,
        },
        RM_MULTIXACT_ID => match i {
            XLOG_MULTIXACT_ZERO_OFF_PAGE => "ZERO_OFF_PAGE",
            XLOG_MULTIXACT_ZERO_MEM_PAGE => "ZERO_MEM_PAGE",
            XLOG_MULTIXACT_CREATE_ID => "CREATE_ID",
            XLOG_MULTIXACT_TRUNCATE_ID => "TRUNCATE_ID",
            _ => return None,
        },
        RM_RELMAP_ID => match i {
            XLOG_RELMAP_UPDATE => "UPDATE",
            _ => return None,
        },
        RM_STANDBY_ID => match i {
            XLOG_STANDBY_LOCK => "LOCK",
            XLOG_RUNNING_XACTS => "RUNNING_XACTS",
            XLOG_INVALIDATIONS => "INVALIDATIONS",
            _ => return None,
        },
        RM_HEAP2_ID => match i {
            0x10 => "PRUNE",
            0x20 => "VACUUM",
            0x30 => "FREEZE_PAGE",
            0x40 => "VISIBLE",
            0x50 => "MULTI_INSERT",
            0xD0 => "MULTI_INSERT+INIT",
            0x60 => "LOCK_UPDATED",
            0x70 => "NEW_CID",
            0x00 => "REWRITE",
            _ => return None,
        },
        RM_HEAP_ID => match i {
            0x00 => "INSERT",
            0x80 => "INSERT+INIT",
            0x10 => "DELETE",
            0x20 => "UPDATE",
            0xA0 => "UPDATE+INIT",
            0x40 => "HOT_UPDATE",
            0xC0 => "HOT_UPDATE+INIT",
            0x30 => "TRUNCATE",
            0x50 => "HEAP_CONFIRM",
            0x60 => "LOCK",
            0x70 => "INPLACE",
            _ => return None,
        },
        RM_BTREE_ID => match i {
            0x00 => "INSERT_LEAF",
            0x10 => "INSERT_UPPER",
            0x20 => "INSERT_META",
            0x30 => "SPLIT_L",
            0x40 => "SPLIT_R",
            0x50 => "INSERT_POST",
            0x60 => "DEDUP",
            0x70 => "DELETE",
            0x80 => "UNLINK_PAGE",
            0x90 => "UNLINK_PAGE_META",
            0xA0 => "NEWROOT",
            0xB0 => "MARK_PAGE_HALFDEAD",
            0xC0 => "VACUUM",
            0xD0 => "REUSE_PAGE",
            0xE0 => "META_CLEANUP",
            _ => return None,
        },
        RM_HASH_ID => match i {
            0x00 => "INIT_META_PAGE",
            0x10 => "INIT_BITMAP_PAGE",
            0x20 => "INSERT",
            0x30 => "ADD_OVFL_PAGE",
            0x40 => "SPLIT_ALLOCATE_PAGE",
            0x50 => "SPLIT_PAGE",
            0x60 => "SPLIT_COMPLETE",
            0x70 => "MOVE_PAGE_CONTENTS",
            0x80 => "SQUEEZE_PAGE",
            0x90 => "DELETE",
            0xA0 => "SPLIT_CLEANUP",
            0xB0 => "UPDATE_META_PAGE",
            0xC0 => "VACUUM_ONE_PAGE",
            _ => return None,
        },
        RM_GIN_ID => match i {
            0x10 => "CREATE_PTREE",
            0x20 => "INSERT",
            0x30 => "SPLIT",
            0x40 => "VACUUM_PAGE",
            0x90 => "VACUUM_DATA_LEAF_PAGE",
            0x50 => "DELETE_PAGE",
            0x60 => "UPDATE_META_PAGE",
            0x70 => "INSERT_LISTPAGE",
            0x80 => "DELETE_LISTPAGE",
            _ => return None,
        },
        RM_GIST_ID => match i {
            0x00 => "PAGE_UPDATE",
            0x10 => "DELETE",
            0x20 => "PAGE_REUSE",
            0x30 => "PAGE_SPLIT",
            0x60 => "PAGE_DELETE",
            0x70 => "ASSIGN_LSN",
            _ => return None,
        },
        RM_SEQ_ID => match i {
            0x00 => "LOG",
            _ => return None,
        },
        RM_SPGIST_ID => match i {
            0x10 => "ADD_LEAF",
            0x20 => "MOVE_LEAFS",
            0x30 => "ADD_NODE",
            0x40 => "SPLIT_TUPLE",
            0x50 => "PICKSPLIT",
            0x60 => "VACUUM_LEAF",
            0x70 => "VACUUM_ROOT",
            0x80 => "VACUUM_REDIRECT",
            _ => return None,
        },
        RM_BRIN_ID => match i {
            0x00 => "CREATE_INDEX",
            0x10 => "INSERT",
            0x90 => "INSERT+INIT",
            0x20 => "UPDATE",
            0xA0 => "UPDATE+INIT",
            0x30 => "SAMEPAGE_UPDATE",
            0x40 => "REVMAP_EXTEND",
            0x50 => "DESUMMARIZE",
            _ => return None,
        },
        // commit_ts_identify and replorigin_identify switch on the raw info.
        RM_COMMIT_TS_ID => match info {
            COMMIT_TS_ZEROPAGE => "ZEROPAGE",
            COMMIT_TS_TRUNCATE => "TRUNCATE",
            _ => return None,
        },
        RM_REPLORIGIN_ID => match info {
            0x00 => "SET",
            0x10 => "DROP",
            _ => return None,
        },
        RM_GENERIC_ID => "Generic",
        RM_LOGICALMSG_ID => match i {
            0x00 => "MESSAGE",
            _ => return None,
        },
        _ => return None,
    })
}

/// `identify` as pg_waldump prints it, including `UNKNOWN (%x)`.
pub fn record_identify_display(rmid: u8, info: u8) -> String {
    match record_identify(rmid, info) {
        Some(s) => s.to_string(),
        None => format!("UNKNOWN ({:x})", info & !XLR_INFO_MASK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(rmgr_name(RM_HEAP_ID), Some("Heap"));
        assert_eq!(rmgr_name(RM_LOGICALMSG_ID), Some("LogicalMessage"));
        assert_eq!(rmgr_name(22), None);
        assert_eq!(
            record_identify(RM_HEAP_ID, 0x80 | 0x01),
            Some("INSERT+INIT")
        );
        assert_eq!(record_identify(RM_XACT_ID, 0x80), Some("COMMIT"));
        assert_eq!(record_identify(RM_COMMIT_TS_ID, 0x01), None);
        assert_eq!(record_identify_display(RM_XLOG_ID, 0xC0), "UNKNOWN (c0)");
    }
}
