//! Relation identity and file naming (`relpath.h`, `md.c`).
//!
//! A relation is identified by (tablespace, database, relfilenode) and has
//! forks (main, fsm, vm, init). Each fork is stored in 1 GiB segment files
//! named `<relfilenode>[_<fork>][.<segno>]` under `base/<db>/`, `global/`
//! (shared relations) or `pg_tblspc/<spc>/PG_15_<catver>/<db>/`.

use std::fmt;

use crate::pg_constants::*;

/// `RelFileNode`: tablespace, database and relfilenode OIDs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFileNode {
    pub spcnode: u32,
    pub dbnode: u32,
    pub relnode: u32,
}

impl fmt::Display for RelFileNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spcnode, self.dbnode, self.relnode)
    }
}

/// One fork of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelTag {
    pub spcnode: u32,
    pub dbnode: u32,
    pub relnode: u32,
    pub forknum: u8,
}

impl RelTag {
    pub fn new(rnode: RelFileNode, forknum: u8) -> RelTag {
        RelTag {
            spcnode: rnode.spcnode,
            dbnode: rnode.dbnode,
            relnode: rnode.relnode,
            forknum,
        }
    }

    pub fn rnode(&self) -> RelFileNode {
        RelFileNode {
            spcnode: self.spcnode,
            dbnode: self.dbnode,
            relnode: self.relnode,
        }
    }

    /// Path of segment `segno` relative to the data directory.
    pub fn segment_path(&self, segno: u32) -> String {
        relation_segment_path(self.rnode(), self.forknum, segno)
    }
}

impl fmt::Display for RelTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match forknumber_to_name(self.forknum) {
            Some(name) if self.forknum != MAIN_FORKNUM => {
                write!(
                    f,
                    "{}/{}/{}_{}",
                    self.spcnode, self.dbnode, self.relnode, name
                )
            }
            _ => write!(f, "{}/{}/{}", self.spcnode, self.dbnode, self.relnode),
        }
    }
}

/// A block of a relation fork.
pub type BlockNumber = u32;

/// Fork name as used in file names (`forkNames[]`); `None` for an unknown fork.
pub fn forknumber_to_name(forknum: u8) -> Option<&'static str> {
    match forknum {
        MAIN_FORKNUM => Some("main"),
        FSM_FORKNUM => Some("fsm"),
        VISIBILITYMAP_FORKNUM => Some("vm"),
        INIT_FORKNUM => Some("init"),
        _ => None,
    }
}

/// Fork number from its name.
pub fn forkname_to_number(name: &str) -> Option<u8> {
    match name {
        "main" => Some(MAIN_FORKNUM),
        "fsm" => Some(FSM_FORKNUM),
        "vm" => Some(VISIBILITYMAP_FORKNUM),
        "init" => Some(INIT_FORKNUM),
        _ => None,
    }
}

/// Directory of a database in a tablespace, relative to the data directory.
pub fn database_dir(spcnode: u32, dbnode: u32) -> String {
    if spcnode == GLOBALTABLESPACE_OID {
        "global".to_string()
    } else if spcnode == DEFAULTTABLESPACE_OID {
        format!("base/{dbnode}")
    } else {
        format!("pg_tblspc/{spcnode}/PG_{PG_MAJORVERSION}_{CATALOG_VERSION_NO}/{dbnode}")
    }
}

/// Path of a relation fork's segment file relative to the data directory.
pub fn relation_segment_path(rnode: RelFileNode, forknum: u8, segno: u32) -> String {
    let mut p = format!(
        "{}/{}",
        database_dir(rnode.spcnode, rnode.dbnode),
        rnode.relnode
    );
    if forknum != MAIN_FORKNUM {
        p.push('_');
        p.push_str(forknumber_to_name(forknum).unwrap_or("unknown"));
    }
    if segno != 0 {
        p.push('.');
        p.push_str(&segno.to_string());
    }
    p
}

/// Parse a relation file name (`16384`, `16384_fsm`, `16384_vm.2`) into
/// (relfilenode, fork, segno). Returns `None` for anything else.
pub fn parse_relfilename(name: &str) -> Option<(u32, u8, u32)> {
    let (base, segno) = match name.split_once('.') {
        Some((b, s)) => {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            (b, s.parse::<u32>().ok()?)
        }
        None => (name, 0),
    };
    let (rel, fork) = match base.split_once('_') {
        Some((r, f)) => (r, forkname_to_number(f).filter(|n| *n != MAIN_FORKNUM)?),
        None => (base, MAIN_FORKNUM),
    };
    if rel.is_empty() || !rel.bytes().all(|c| c.is_ascii_digit()) || rel.starts_with('0') {
        return None;
    }
    Some((rel.parse().ok()?, fork, segno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_postgres() {
        let r = RelFileNode {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
        };
        assert_eq!(relation_segment_path(r, MAIN_FORKNUM, 0), "base/5/16384");
        assert_eq!(
            relation_segment_path(r, FSM_FORKNUM, 2),
            "base/5/16384_fsm.2"
        );
        let g = RelFileNode {
            spcnode: 1664,
            dbnode: 0,
            relnode: 1262,
        };
        assert_eq!(
            relation_segment_path(g, VISIBILITYMAP_FORKNUM, 0),
            "global/1262_vm"
        );
        let t = RelFileNode {
            spcnode: 16400,
            dbnode: 5,
            relnode: 16384,
        };
        assert_eq!(
            relation_segment_path(t, MAIN_FORKNUM, 0),
            "pg_tblspc/16400/PG_15_202209061/5/16384"
        );
    }

    #[test]
    fn parses_file_names() {
        assert_eq!(parse_relfilename("16384"), Some((16384, MAIN_FORKNUM, 0)));
        assert_eq!(
            parse_relfilename("16384_fsm"),
            Some((16384, FSM_FORKNUM, 0))
        );
        assert_eq!(
            parse_relfilename("16384_vm.3"),
            Some((16384, VISIBILITYMAP_FORKNUM, 3))
        );
        assert_eq!(
            parse_relfilename("16384_init"),
            Some((16384, INIT_FORKNUM, 0))
        );
        for bad in [
            "",
            "pg_filenode.map",
            "16384_main",
            "16384.",
            "16384_x",
            "0123",
            "PG_VERSION",
        ] {
            assert_eq!(parse_relfilename(bad), None, "{bad}");
        }
    }
}
