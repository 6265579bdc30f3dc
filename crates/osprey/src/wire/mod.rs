//! The wire format's common pieces, shared by every capability's decoder: the record header,
//! decode errors and the splitting of variable-length tails. A leaf: it depends on no
//! capability and no pipeline stage, so capabilities decode their records without knowing the
//! `Event` enum that gathers them.

pub mod text;

use crate::abi;

/// The common header of every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub ts_boot_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: Vec<u8>,
}

impl From<&abi::EventHeader> for Header {
    fn from(h: &abi::EventHeader) -> Self {
        Header {
            kind: h.kind,
            ts_boot_ns: h.ts_boot_ns,
            pid: h.pid,
            tid: h.tid,
            ppid: h.ppid,
            uid: h.uid,
            gid: h.gid,
            cgroup_id: h.cgroup_id,
            comm: text::until_nul(&h.comm).to_vec(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind} record of {len} bytes is malformed: {why}")]
    Malformed {
        kind: &'static str,
        len: usize,
        why: &'static str,
    },
}

/// Splits the variable tail of a record into consecutive fields of the given lengths.
pub fn split_tail<'a, const N: usize>(
    bytes: &'a [u8],
    fixed: usize,
    lens: [usize; N],
    kind: &'static str,
) -> Result<[&'a [u8]; N], DecodeError> {
    let malformed = |why| DecodeError::Malformed {
        kind,
        len: bytes.len(),
        why,
    };
    let mut rest = bytes.get(fixed..).ok_or_else(|| malformed("short"))?;
    let mut out = [&[][..]; N];
    for (slot, len) in out.iter_mut().zip(lens) {
        if rest.len() < len {
            return Err(malformed("tail shorter than its lengths"));
        }
        let (field, tail) = rest.split_at(len);
        *slot = field;
        rest = tail;
    }
    Ok(out)
}

/// Like `split_tail`, for tails laid out as `first` NUL-terminated, then the rest.
pub fn strip_nul(field: &[u8]) -> &[u8] {
    field.strip_suffix(&[0]).unwrap_or(field)
}
