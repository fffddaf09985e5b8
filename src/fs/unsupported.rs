//! Every operation bucketfs refuses, and the errno it answers: the one list the
//! FUSE glue (`mod.rs`) and the operations consult, so that what the kernel hears
//! and what docs/SEMANTICS.md ("Refused operations") says cannot drift apart; a
//! unit test compares this table with that one.
//!
//! Why a table rather than errors scattered at each call site: a user deciding
//! whether a program can run on a bucket needs the complete list, and a refusal
//! is a statement about the data model (no second name for an object, no atomic
//! two-key change, no space to reserve), not an accident of one code path.
//!
//! Operations answered with ENOSYS are ones the kernel then does itself, which is
//! correct here: it keeps `flock`/`fcntl` locks locally (they are never sent, as
//! we do not ask for `FUSE_POSIX_LOCKS`), copies a `copy_file_range` through read
//! and write, treats a whole file as data for `SEEK_DATA`/`SEEK_HOLE`, answers
//! `ioctl` with ENOTTY and `poll` as always ready.

/// An operation (or a form of one) bucketfs refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Link,
    RenameExchange,
    Fallocate,
    Locks,
    CopyFileRange,
    Lseek,
    Ioctl,
    Poll,
    Bmap,
    XattrNamespace,
    RootAttributes,
}

/// One row of the table.
pub struct Refusal {
    pub op: Refused,
    /// As docs/SEMANTICS.md names it.
    pub name: &'static str,
    pub errno: i32,
    pub errno_name: &'static str,
    pub why: &'static str,
}

pub const REFUSALS: &[Refusal] = &[
    Refusal {
        op: Refused::Link,
        name: "link (hard links)",
        errno: libc::ENOTSUP,
        errno_name: "ENOTSUP",
        why: "an object has exactly one key; a second name would be a copy that silently diverges",
    },
    Refusal {
        op: Refused::RenameExchange,
        name: "rename with RENAME_EXCHANGE or RENAME_WHITEOUT",
        errno: libc::EINVAL,
        errno_name: "EINVAL",
        why: "an exchange needs an atomic two-key operation object stores do not have",
    },
    Refusal {
        op: Refused::Fallocate,
        name: "fallocate",
        errno: libc::EOPNOTSUPP,
        errno_name: "EOPNOTSUPP",
        why: "a bucket has no space to reserve; posix_fallocate in glibc then writes zeros instead",
    },
    Refusal {
        op: Refused::Locks,
        name: "getlk, setlk (fcntl locks)",
        errno: libc::ENOSYS,
        errno_name: "ENOSYS",
        why: "never sent: the kernel keeps flock and fcntl locks for this machine itself",
    },
    Refusal {
        op: Refused::CopyFileRange,
        name: "copy_file_range",
        errno: libc::ENOSYS,
        errno_name: "ENOSYS",
        why: "the kernel copies through read and write instead",
    },
    Refusal {
        op: Refused::Lseek,
        name: "lseek (SEEK_DATA, SEEK_HOLE)",
        errno: libc::ENOSYS,
        errno_name: "ENOSYS",
        why: "the kernel seeks itself; a whole file is data (objects have no holes)",
    },
    Refusal {
        op: Refused::Ioctl,
        name: "ioctl",
        errno: libc::ENOSYS,
        errno_name: "ENOSYS",
        why: "no device controls; the application sees ENOTTY",
    },
    Refusal {
        op: Refused::Poll,
        name: "poll",
        errno: libc::ENOSYS,
        errno_name: "ENOSYS",
        why: "the kernel then reports files always ready, as for regular files",
    },
    Refusal {
        op: Refused::Bmap,
        name: "bmap",
        errno: libc::ENOSYS,
        errno_name: "ENOSYS",
        why: "objects have no blocks on a device",
    },
    Refusal {
        op: Refused::XattrNamespace,
        name: "getxattr, setxattr, removexattr outside user.*",
        errno: libc::ENOTSUP,
        errno_name: "ENOTSUP",
        why: "security., system. and trusted. attributes mean something to the kernel that a bucket cannot keep; `ls -l` asks once per file system, not once per file, when told so",
    },
    Refusal {
        op: Refused::RootAttributes,
        name: "chmod, chown, utimes, setxattr of the mount root",
        errno: libc::EPERM,
        errno_name: "EPERM",
        why: "the root is the bucket (or prefix) itself: there is no object to store attributes in",
    },
];

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not supported ({}): {}", self.name, self.errno_name, self.why)
    }
}

/// The table row of `op`.
pub fn refusal(op: Refused) -> &'static Refusal {
    REFUSALS.iter().find(|r| r.op == op).expect("every Refused has a row")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of this table is a row of the table in docs/SEMANTICS.md with the
    /// same errno, and that table has no other rows.
    #[test]
    fn the_documented_table_matches_this_one() {
        let doc = include_str!("../../docs/SEMANTICS.md");
        let start = doc.find("## Refused operations").expect("SEMANTICS.md has the section");
        let section = &doc[start..];
        let section = &section[..section[3..].find("\n## ").map(|i| i + 3).unwrap_or(section.len())];
        let rows: Vec<(String, String)> = section
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| operation") && !l.starts_with("|--"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
            })
            .collect();
        for r in REFUSALS {
            let row = rows.iter().find(|(n, _)| n == r.name);
            assert_eq!(row.map(|(_, e)| e.as_str()), Some(r.errno_name), "{}", r.name);
            assert_eq!(refusal(r.op).errno_name, r.errno_name);
        }
        assert_eq!(rows.len(), REFUSALS.len(), "SEMANTICS.md lists a refusal the code does not: {rows:?}");
        let names = [
            ("ENOTSUP", libc::ENOTSUP),
            ("EOPNOTSUPP", libc::EOPNOTSUPP),
            ("EINVAL", libc::EINVAL),
            ("ENOSYS", libc::ENOSYS),
            ("EPERM", libc::EPERM),
        ];
        for r in REFUSALS {
            assert!(
                names.contains(&(r.errno_name, r.errno)),
                "{}: {} is not {}",
                r.name,
                r.errno,
                r.errno_name
            );
        }
    }
}
