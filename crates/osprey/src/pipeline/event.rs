//! Typed events decoded from ring records, and their JSON shape.

use serde::ser::{SerializeMap, Serializer};

use crate::abi::{self, kind};
use crate::net::tcp;
pub use crate::wire::{split_tail, strip_nul, DecodeError, Header};
use crate::{files, memory, process, profile, security};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    FileOpen(files::FileOpen),
    Exec(process::Exec),
    Fork(process::Fork),
    Exit(process::Exit),
    ProfileUserStack(profile::UserStack),
    FaultMapping(memory::FaultMapping),
    Security(security::syscall::SecSyscall),
    TcpState(tcp::TcpState),
    TcpClose(tcp::TcpClose),
    Baseline(security::baseline::BaselineEvent),
    Fim(security::fim::event::FimEvent),
}

impl Payload {
    /// The `kind` string in JSON and tables.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Payload::FileOpen(_) => "file_open",
            Payload::Exec(_) => "exec",
            Payload::Fork(_) => "fork",
            Payload::Exit(_) => "exit",
            Payload::ProfileUserStack(_) => "user_stack",
            Payload::FaultMapping(_) => "fault_mapping",
            Payload::Security(_) => "security",
            Payload::TcpState(_) => "tcp_state",
            Payload::TcpClose(_) => "tcp_close",
            Payload::Baseline(_) => "baseline",
            Payload::Fim(_) => "fim",
        }
    }

    /// Writes the kind-specific JSON fields.
    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        match self {
            Payload::FileOpen(p) => p.write_json(map),
            Payload::Exec(p) => p.write_json(map),
            Payload::Fork(p) => p.write_json(map),
            Payload::Exit(p) => p.write_json(map),
            Payload::ProfileUserStack(p) => p.write_json(map),
            Payload::FaultMapping(p) => p.write_json(map),
            Payload::Security(p) => p.write_json(map),
            Payload::TcpState(p) => p.write_json(map),
            Payload::TcpClose(p) => p.write_json(map),
            Payload::Baseline(p) => p.write_json(map),
            Payload::Fim(p) => p.write_json(map),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub header: Header,
    pub payload: Payload,
}

/// Decodes one ring record. Never panics on any input (fuzzed).
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let raw: abi::EventHeader = abi::read(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let header = Header::from(&raw);
    let payload = match raw.kind {
        kind::FILE_OPEN => Payload::FileOpen(files::decode(bytes)?),
        kind::EXEC => Payload::Exec(process::decode_exec(bytes)?),
        kind::FORK => Payload::Fork(process::decode_fork(bytes)?),
        kind::EXIT => Payload::Exit(process::decode_exit(bytes)?),
        kind::PROFILE_USER_STACK => Payload::ProfileUserStack(profile::decode_user_stack(bytes)?),
        kind::FAULT_MAPPING => Payload::FaultMapping(memory::decode_mapping(bytes)?),
        kind::SEC_SYSCALL => Payload::Security(security::syscall::decode(bytes)?),
        kind::TCP_STATE => Payload::TcpState(tcp::decode_state(bytes)?),
        kind::TCP_CLOSE => Payload::TcpClose(tcp::decode_close(bytes)?),
        kind::BASELINE => Payload::Baseline(security::baseline::decode(bytes)?),
        kind::FIM => Payload::Fim(security::fim::event::decode(bytes)?),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(Event { header, payload })
}

/// Serializes an enriched event as one JSON object (docs/events.md).
/// `P`: the process context, or its JSON already rendered (`process_json`).
pub struct JsonEvent<'a, P: serde::Serialize + ?Sized = super::cache::ProcessContext<'a>> {
    pub time: &'a str,
    pub event: &'a Event,
    pub process: &'a P,
}

impl<P: serde::Serialize + ?Sized> serde::Serialize for JsonEvent<'_, P> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("time", self.time)?;
        map.serialize_entry("kind", self.event.payload.kind_name())?;
        map.serialize_entry("process", self.process)?;
        self.event.payload.write_json(&mut map)?;
        map.end()
    }
}

/// The kind-specific fields alone, as a JSON object.
struct PayloadFields<'a>(&'a Payload);

impl serde::Serialize for PayloadFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.0.write_json(&mut map)?;
        map.end()
    }
}

/// Appends what `JsonEvent` serializes to, byte for byte, with the process object already
/// rendered: the fixed part is copied (the time, RFC 3339, and the kind are ASCII that JSON
/// escapes nothing of), only the payload's fields go through the serializer. On error `out`
/// is as it was.
pub fn write_event_json(
    out: &mut Vec<u8>,
    time: &str,
    process: &serde_json::value::RawValue,
    payload: &Payload,
) -> serde_json::Result<()> {
    let start = out.len();
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(payload.kind_name().as_bytes());
    out.extend_from_slice(b"\",\"process\":");
    out.extend_from_slice(process.get().as_bytes());
    let fields = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, &PayloadFields(payload)) {
        out.truncate(start);
        return Err(e);
    }
    // The payload's object, `{}` or `{"name":..}`, continues this one.
    if out.len() == fields + 2 {
        out.truncate(fields);
        out.push(b'}');
    } else {
        out[fields] = b',';
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
        let mut raw = [0u8; 64];
        raw[0] = 99;
        assert_eq!(decode(&raw), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn event_json_is_what_json_event_serializes() {
        let process =
            serde_json::value::RawValue::from_string(r#"{"pid":7,"comm":"a\"b"}"#.into()).unwrap();
        let payloads = [
            Payload::Fork(process::Fork {
                child_pid: 8,
                child_start_boot_ns: 2,
            }),
            Payload::Exit(process::Exit {
                start_boot_ns: 0,
                status: 256,
            }),
        ];
        for payload in payloads {
            let event = super::super::cache::tests::ev(7, 1, 1, payload);
            let time = "2024-01-02T03:04:05.000000001Z";
            let mut out = b"earlier line\n".to_vec();
            write_event_json(&mut out, time, &process, &event.payload).unwrap();
            let want = serde_json::to_string(&JsonEvent {
                time,
                event: &event,
                process: &*process,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("earlier line\n{want}")
            );
        }
    }

    #[test]
    fn split_tail_checks_lengths() {
        let bytes = [0u8, 0, b'a', b'b', b'c'];
        let [a, b] = split_tail(&bytes, 2, [1, 2], "t").unwrap();
        assert_eq!((a, b), (&b"a"[..], &b"bc"[..]));
        assert!(split_tail(&bytes, 2, [2, 2], "t").is_err());
    }
}
