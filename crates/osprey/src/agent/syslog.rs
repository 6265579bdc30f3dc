//! Alerts, health warnings and agent notices to the local syslog daemon: one RFC 3164
//! datagram per record (`<PRI>Mmm dd hh:mm:ss osprey[PID]: {json}`), facility daemon, the
//! format /dev/log readers (journald, rsyslog, syslog-ng) take. Sending never blocks the
//! agent: a full or missing socket costs the message, counted in `dropped`.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use serde_json::Value;

const FACILITY_DAEMON: u8 = 3;

pub struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
    pid: u32,
    pub sent: u64,
    pub dropped: u64,
}

impl Syslog {
    /// An unconnected socket: every send names the path, so a restarted syslog daemon
    /// (a new socket at the same path) is picked up without reconnecting.
    pub fn new(path: PathBuf) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            path,
            pid: std::process::id(),
            sent: 0,
            dropped: 0,
        })
    }

    /// Sends the record if it is one syslog should carry.
    pub fn send_record(&mut self, record: &Value) {
        if let Some(severity) = severity_of(record) {
            self.send(severity, &record.to_string());
        }
    }

    pub fn send(&mut self, severity: u8, message: &str) {
        let line = format_line(
            severity,
            &chrono::Local::now().format("%b %e %H:%M:%S").to_string(),
            self.pid,
            message,
        );
        match self.socket.send_to(line.as_bytes(), &self.path) {
            Ok(_) => self.sent += 1,
            Err(_) => self.dropped += 1,
        }
    }
}

fn format_line(severity: u8, timestamp: &str, pid: u32, message: &str) -> String {
    format!(
        "<{}>{timestamp} osprey[{pid}]: {message}",
        FACILITY_DAEMON * 8 + severity
    )
}

/// Syslog severity of a log record; `None` for records syslog does not carry (events).
pub fn severity_of(record: &Value) -> Option<u8> {
    let level = |l: &str| match l {
        "error" => 3,
        "warning" => 4,
        _ => 6,
    };
    match record["kind"].as_str()? {
        "alert" => Some(match record["severity"].as_str().unwrap_or("") {
            "critical" => 2,
            "high" => 3,
            "medium" => 4,
            "low" => 5,
            _ => 6,
        }),
        "health" | "agent" => Some(level(record["level"].as_str().unwrap_or("info"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_rfc3164_with_daemon_priorities() {
        assert_eq!(
            format_line(2, "Mar  7 09:05:01", 42, "{}"),
            "<26>Mar  7 09:05:01 osprey[42]: {}"
        );
        assert_eq!(
            severity_of(&json!({"kind": "alert", "severity": "high"})),
            Some(3)
        );
        assert_eq!(
            severity_of(&json!({"kind": "health", "level": "warning"})),
            Some(4)
        );
        assert_eq!(severity_of(&json!({"kind": "exec"})), None);
    }

    #[test]
    fn datagrams_reach_a_bound_socket() {
        let dir = std::env::temp_dir().join(format!("osprey-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let mut syslog = Syslog::new(path.clone()).unwrap();
        syslog.send_record(&json!({"kind": "agent", "level": "info", "message": "hi"}));
        syslog.send_record(&json!({"kind": "exec"}));
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(line.starts_with("<30>"), "{line}");
        assert!(
            line.contains(&format!("osprey[{}]: {{", std::process::id()))
                && line.contains(r#""message":"hi""#),
            "{line}"
        );
        assert_eq!((syslog.sent, syslog.dropped), (1, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
