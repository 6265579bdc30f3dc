//! The profiler's frame types: a sampled code address and the frame it symbolizes to.

use serde::Serialize;

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Frame {
    pub name: String,
    /// Binary path, `[kernel]`, `[perf-map]` or `[unknown]`.
    pub module: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub kernel: bool,
}

impl Frame {
    pub(crate) fn is_named(&self) -> bool {
        self.module != "[unknown]"
    }

    pub(crate) fn unknown(addr: u64, kernel: bool) -> Self {
        Frame {
            name: format!("[unknown 0x{addr:x}]"),
            module: "[unknown]".into(),
            file: None,
            line: None,
            kernel,
        }
    }
}

/// A code address as sampled: the first frame is the interrupted instruction, the others
/// return addresses (symbolized one byte earlier, inside the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeAddr {
    pub addr: u64,
    pub is_return: bool,
}

impl CodeAddr {
    pub(crate) fn lookup(self) -> u64 {
        if self.is_return {
            self.addr.saturating_sub(1)
        } else {
            self.addr
        }
    }
}

/// A user frame before symbolization: a native code address, or a frame of interpreted
/// code already named (see `python`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RawFrame {
    Native(CodeAddr),
    Python(std::sync::Arc<Frame>),
}
