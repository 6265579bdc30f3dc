//! pprof output: the profile.proto messages (github.com/google/pprof/proto/profile.proto)
//! declared with prost, built from an aggregated profile and written gzipped.

use std::collections::HashMap;
use std::io::{self, Write};

use prost::Message;

use super::{Frame, Profile, ProfileKind, StackSample};

#[derive(Clone, PartialEq, Message)]
pub struct PprofProfile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Interns strings; index 0 is the empty string, as the format requires.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds the pprof message. CPU profiles carry two values per sample (count and CPU
/// nanoseconds = count × period); off-CPU profiles one (nanoseconds blocked).
pub fn build(profile: &Profile, start_unix_ns: i64) -> PprofProfile {
    let mut strings = Strings::new();
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut mappings: HashMap<String, u64> = HashMap::new();
    let mut locations: HashMap<Frame, u64> = HashMap::new();
    let mut out = PprofProfile::default();
    let period_ns = 1_000_000_000 / profile.frequency_hz.max(1) as i64;
    match profile.kind {
        ProfileKind::Cpu => {
            out.sample_type = vec![
                ValueType {
                    r#type: strings.id("samples"),
                    unit: strings.id("count"),
                },
                ValueType {
                    r#type: strings.id("cpu"),
                    unit: strings.id("nanoseconds"),
                },
            ];
            out.period_type = Some(ValueType {
                r#type: strings.id("cpu"),
                unit: strings.id("nanoseconds"),
            });
            out.period = period_ns;
        }
        ProfileKind::OffCpu => {
            out.sample_type = vec![ValueType {
                r#type: strings.id("off_cpu"),
                unit: strings.id("nanoseconds"),
            }];
            out.period_type = out.sample_type.first().cloned();
            out.period = 1;
        }
    }
    let pid_key = strings.id("pid");
    let comm_key = strings.id("comm");
    let container_keys = ["container", "pod", "namespace"].map(|k| strings.id(k));
    for stack in &profile.stacks {
        let mut location_id = Vec::with_capacity(stack.frames.len());
        for frame in stack.frames.iter().rev() {
            let next_id = locations.len() as u64 + 1;
            let id = *locations.entry(frame.clone()).or_insert_with(|| {
                let file = frame.file.clone().unwrap_or_default();
                let fkey = (super::output::folded_name(frame), file.clone());
                let next_fn = functions.len() as u64 + 1;
                let function_id = *functions.entry(fkey.clone()).or_insert_with(|| {
                    out.function.push(Function {
                        id: next_fn,
                        name: strings.id(&fkey.0),
                        system_name: strings.id(&fkey.0),
                        filename: strings.id(&file),
                        start_line: 0,
                    });
                    next_fn
                });
                let next_map = mappings.len() as u64 + 1;
                let mapping_id = *mappings.entry(frame.module.clone()).or_insert_with(|| {
                    out.mapping.push(Mapping {
                        id: next_map,
                        filename: strings.id(&frame.module),
                        has_functions: true,
                        has_filenames: frame.file.is_some(),
                        has_line_numbers: frame.line.is_some(),
                        ..Default::default()
                    });
                    next_map
                });
                out.location.push(Location {
                    id: next_id,
                    mapping_id,
                    address: 0,
                    line: vec![Line {
                        function_id,
                        line: frame.line.map(i64::from).unwrap_or(0),
                    }],
                    is_folded: false,
                });
                next_id
            });
            location_id.push(id);
        }
        let value = stack.value as i64;
        out.sample.push(Sample {
            location_id,
            value: match profile.kind {
                ProfileKind::Cpu => vec![value, value * period_ns],
                ProfileKind::OffCpu => vec![value],
            },
            label: labels(stack, pid_key, comm_key, container_keys, &mut strings),
        });
    }
    out.time_nanos = start_unix_ns;
    out.duration_nanos = (profile.duration_secs * 1e9) as i64;
    out.comment = vec![strings.id(&format!("osprey profile: {}", profile.command))];
    out.string_table = strings.table;
    out
}

/// A sample's labels: pid, comm, and its container's name, pod and namespace when known.
fn labels(
    stack: &StackSample,
    pid_key: i64,
    comm_key: i64,
    container_keys: [i64; 3],
    strings: &mut Strings,
) -> Vec<Label> {
    let mut out = vec![
        Label {
            key: pid_key,
            num: i64::from(stack.pid),
            ..Default::default()
        },
        Label {
            key: comm_key,
            str: strings.id(&stack.comm),
            ..Default::default()
        },
    ];
    if let Some(c) = &stack.container {
        let values = [Some(&c.name), c.pod.as_ref(), c.namespace.as_ref()];
        for (key, value) in container_keys.into_iter().zip(values) {
            if let Some(v) = value {
                out.push(Label {
                    key,
                    str: strings.id(v),
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// Writes the gzipped message, as `go tool pprof` and Pyroscope read it.
pub fn write(profile: &Profile, start_unix_ns: i64, out: &mut dyn Write) -> io::Result<()> {
    let bytes = build(profile, start_unix_ns).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_consistent_totals() {
        let profile = super::super::output::tests::sample_profile();
        let mut gz = Vec::new();
        write(&profile, 1, &mut gz).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut raw)
            .unwrap();
        let p = PprofProfile::decode(raw.as_slice()).unwrap();
        assert_eq!(p.string_table[0], "");
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 100);
        let leaf = &p.location[(p.sample[0].location_id[0] - 1) as usize];
        let function = &p.function[(leaf.line[0].function_id - 1) as usize];
        assert_eq!(p.string_table[function.name as usize], "leaf");
        assert_eq!(p.period, 1_000_000_000 / 99);
    }

    #[test]
    fn samples_of_containers_carry_container_pod_and_namespace_labels() {
        let mut profile = super::super::output::tests::sample_profile();
        profile.stacks[0].container = Some(crate::container::pids::Tag {
            id: "c".repeat(64),
            name: "web".into(),
            pod: Some("web-0".into()),
            namespace: Some("shop".into()),
        });
        let p = build(&profile, 1);
        let text = |i: i64| p.string_table[i as usize].as_str();
        let labels = |s: &Sample| -> Vec<(String, String)> {
            s.label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| (text(l.key).to_string(), text(l.str).to_string()))
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            labels(&p.sample[0]),
            pairs(&[
                ("comm", "w"),
                ("container", "web"),
                ("pod", "web-0"),
                ("namespace", "shop")
            ])
        );
        assert_eq!(
            labels(&p.sample[1]),
            pairs(&[("comm", "w")]),
            "a host process"
        );
    }
}
