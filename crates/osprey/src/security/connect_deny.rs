//! `deny` on connect: cgroup/connect4 and connect6 programs on the root cgroup refuse the
//! (address, port) pairs that deny rules name, so connect() fails with EPERM before any
//! packet leaves. This works on every kernel with cgroup v2, unlike BPF LSM.
//! Each refusal comes back on the enforce object's ring as a connect with status DENIED,
//! which the rules detector reports as `blocked`.

use std::net::IpAddr;

use super::rules::expr::Literal;
use super::rules::{Rule, RuleError};
use crate::abi::kind;
use crate::kernel::loader::{Attach, CapabilitySpec, Hook, LoadedCapability, Role};

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "enforce-connect",
    object: osprey_bpf::ENFORCE,
    roles: &[
        Role {
            name: "deny-connect4",
            required: true,
            hooks: &[Hook {
                program: "enforce_connect4",
                attach: Attach::CgroupSockAddr("connect4"),
            }],
        },
        Role {
            name: "deny-connect6",
            required: true,
            hooks: &[Hook {
                program: "enforce_connect6",
                attach: Attach::CgroupSockAddr("connect6"),
            }],
        },
    ],
    kinds: &[(kind::SEC_SYSCALL, "connect_denied")],
    default_ring_bytes: 64 * 1024,
};

/// One (address, port) the kernel refuses; `None` is any address, port 0 any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectDeny {
    pub rule: usize,
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// Only meaningful when `addr` is `None`: which family's wildcard.
    pub v6: bool,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ConnectDenyKey {
    family: u16,
    port_be: u16,
    addr: [u8; 16],
}

// SAFETY: plain integers; any bit pattern is valid.
unsafe impl aya::Pod for ConnectDenyKey {}

fn error(rule: &Rule, why: &str) -> RuleError {
    rule.error(format!(
            "deny rule `{}` on connect must be decidable in the kernel (evt.kind = connect with net.port and/or net.addr literals joined by `and`): {why}",
        rule.name
    ))
}

fn parse_addr(s: &str) -> Option<(IpAddr, u16)> {
    let sa: std::net::SocketAddr = s.parse().ok()?;
    Some((sa.ip(), sa.port()))
}

/// What the deny rules on connect (each with its index in the rule set) ask of the kernel.
pub fn connect_denies(rules: &[(usize, &Rule)]) -> Result<Vec<ConnectDeny>, Vec<RuleError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for &(index, rule) in rules {
        match rule_denies(index, rule) {
            Ok(d) => out.extend(d),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn rule_denies(index: usize, rule: &Rule) -> Result<Vec<ConnectDeny>, RuleError> {
    let mut ports: Option<Vec<u16>> = None;
    let mut addrs: Option<Vec<(IpAddr, u16)>> = None;
    let mut families = (true, true);
    for term in rule.condition.conjuncts() {
        let (field, values) = term
            .equality()
            .ok_or_else(|| error(rule, "only `=` and `in` comparisons joined by `and`"))?;
        match field {
            "evt.kind" | "evt.syscall" => {}
            "net.port" => {
                let p = values
                    .iter()
                    .map(|v| match v {
                        Literal::Int(n) => u16::try_from(*n).ok(),
                        _ => None,
                    })
                    .collect::<Option<Vec<u16>>>()
                    .ok_or_else(|| error(rule, "net.port must be numbers 0-65535"))?;
                ports = Some(p);
            }
            "net.addr" => {
                let a = values
                    .iter()
                    .map(|v| v.text().as_deref().and_then(parse_addr))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        error(rule, "net.addr must be ip:port or [ipv6]:port literals")
                    })?;
                addrs = Some(a);
            }
            "net.family" => {
                let names: Vec<String> = values.iter().filter_map(|v| v.text()).collect();
                families = (
                    names.iter().any(|n| n == "inet"),
                    names.iter().any(|n| n == "inet6"),
                );
            }
            other => {
                return Err(error(
                    rule,
                    &format!("`{other}` cannot be decided in the kernel"),
                ))
            }
        }
    }
    let wanted = |ip: &IpAddr| if ip.is_ipv6() { families.1 } else { families.0 };
    let denies: Vec<ConnectDeny> = match (addrs, ports) {
        (Some(addrs), ports) => addrs
            .into_iter()
            .filter(|(ip, port)| wanted(ip) && ports.as_ref().is_none_or(|p| p.contains(port)))
            .map(|(ip, port)| ConnectDeny {
                rule: index,
                addr: Some(ip),
                port,
                v6: ip.is_ipv6(),
            })
            .collect(),
        (None, Some(ports)) => ports
            .into_iter()
            .flat_map(|port| {
                [(false, families.0), (true, families.1)]
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(move |(v6, _)| ConnectDeny {
                        rule: index,
                        addr: None,
                        port,
                        v6,
                    })
            })
            .collect(),
        (None, None) => return Err(error(rule, "it names no net.port or net.addr")),
    };
    if denies.is_empty() {
        return Err(error(rule, "its conditions leave nothing to deny"));
    }
    Ok(denies)
}

fn key(deny: &ConnectDeny) -> ConnectDenyKey {
    let mut addr = [0u8; 16];
    let family = match deny.addr {
        Some(IpAddr::V4(v4)) => {
            addr[..4].copy_from_slice(&v4.octets());
            libc::AF_INET
        }
        Some(IpAddr::V6(v6)) => {
            addr.copy_from_slice(&v6.octets());
            libc::AF_INET6
        }
        None if deny.v6 => libc::AF_INET6,
        None => libc::AF_INET,
    };
    ConnectDenyKey {
        family: family as u16,
        port_be: deny.port.to_be(),
        addr,
    }
}

/// Loads and attaches the connect programs and fills their map.
pub fn start(denies: &[ConnectDeny]) -> Result<LoadedCapability, String> {
    super::enforce_object::load(
        SPEC,
        "connect_denies",
        denies.iter().map(|d| Ok((key(d), d.rule, 0))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_denies(src: &str) -> Result<Vec<ConnectDeny>, Vec<RuleError>> {
        let set = super::super::rules::load_for_test("c.yaml", src);
        super::connect_denies(&set.rules.iter().enumerate().collect::<Vec<_>>())
    }

    #[test]
    fn ports_and_addresses_compile_to_kernel_keys() {
        let d = connect_denies("- rule: c\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = connect and net.port in (25, 6667)\n- rule: a\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = connect and net.addr = \"[::1]:9\"\n").unwrap();
        assert_eq!(d.len(), 5, "{d:?}");
        assert_eq!(
            d[4],
            ConnectDeny {
                rule: 1,
                addr: Some("::1".parse().unwrap()),
                port: 9,
                v6: true
            }
        );
        let k = key(&d[0]);
        assert_eq!((k.family, u16::from_be(k.port_be)), (2, 25));
    }

    #[test]
    fn undecidable_connect_rules_are_rejected_with_position() {
        let e = connect_denies("- rule: c\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = connect and proc.name = curl\n").unwrap_err();
        assert!(e[0].to_string().starts_with("c.yaml:1:"), "{}", e[0]);
        assert!(e[0].message.contains("`proc.name`"), "{}", e[0]);
        let none = "- rule: c\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = connect\n";
        assert!(connect_denies(none).unwrap_err()[0]
            .message
            .contains("no net.port"));
    }
}
