//! The environment variables an exec event carries: an allow-list of variables that change
//! what a program loads or runs (dynamic linker, interpreters' start-up), read in the
//! kernel from the new image's environment when a rule asks for `proc.env`.

/// Names copied at exec. The kernel copies a variable when its first 8 bytes match one of
/// these names' (bpf/process.bpf.c, env_wanted); only exact names are kept.
pub const ALLOWED: &[&str] = &[
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "BASH_ENV",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
];

/// `.rodata` setting of the process object that turns the copy on.
pub fn globals() -> Vec<(&'static str, Vec<u8>)> {
    vec![("exec_env_enabled", vec![1])]
}

/// The allow-listed `NAME=value` entries of a NUL-separated block, in order.
pub fn allowed(block: &[u8]) -> Vec<Vec<u8>> {
    block
        .split(|&b| b == 0)
        .filter(|v| {
            v.iter()
                .position(|&b| b == b'=')
                .is_some_and(|i| ALLOWED.iter().any(|n| n.as_bytes() == &v[..i]))
        })
        .map(<[u8]>::to_vec)
        .collect()
}

/// The value of `name` among `env` entries.
pub fn value<'a>(env: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    env.iter().find_map(|v| {
        v.strip_prefix(name.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_exact_allowed_names() {
        let block = b"LD_PRELOAD=/tmp/x.so\0LD_PRELOADX=1\0PYTHONPATH=/a\0HOME=/root\0";
        let env = allowed(block);
        assert_eq!(
            env,
            vec![b"LD_PRELOAD=/tmp/x.so".to_vec(), b"PYTHONPATH=/a".to_vec()]
        );
        assert_eq!(value(&env, "LD_PRELOAD"), Some(&b"/tmp/x.so"[..]));
        assert_eq!(value(&env, "HOME"), None);
    }

    /// Every allowed name is longer than the kernel's 8-byte comparison and has its prefix
    /// in bpf/process.bpf.c's env_wanted, written as P8('L', 'D', '_', ...).
    #[test]
    fn kernel_prefixes_cover_the_allow_list() {
        let source = include_str!("../../../../bpf/process.bpf.c");
        let prefixes: Vec<String> = source
            .split("P8(")
            .skip(2) // the macro's own definition
            .map(|call| {
                call.split(')')
                    .next()
                    .unwrap()
                    .replace(['\'', ' ', ','], "")
            })
            .collect();
        for name in ALLOWED {
            let with_eq = format!("{name}=");
            assert!(
                with_eq.len() >= 8,
                "{name}: shorter than the kernel's comparison"
            );
            assert!(
                prefixes.contains(&with_eq[..8].to_string()),
                "{name} not in env_wanted"
            );
        }
    }
}
