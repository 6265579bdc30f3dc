//! One small BTF reader for everything that inspects types outside aya: the ABI layout test
//! (our `#[repr(C)]` mirror against the objects' BTF) and the CO-RE failure explainer (an
//! object's relocations against the kernel's BTF). It follows structs, unions, enums,
//! typedefs and qualifiers, ints, floats, arrays, pointers and forward declarations, and steps
//! over every other kind. Either byte order; malformed input is an error, never a panic.

/// One BTF type. Kinds nobody inspects are `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    Void,
    Int {
        size: u32,
        signed: bool,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        len: u32,
    },
    /// A struct or (`union`) a union.
    Struct {
        name: String,
        union: bool,
        size: u32,
        members: Vec<Member>,
    },
    /// `enum` and `enum64` alike.
    Enum {
        name: String,
        size: u32,
        signed: bool,
        values: Vec<(String, i128)>,
    },
    Fwd {
        name: String,
        union: bool,
    },
    Float {
        size: u32,
    },
    /// typedef, const, volatile, restrict, type tag: look through to `target`.
    Alias {
        target: u32,
    },
    /// func, func proto, var, datasec, decl tag.
    Other {
        kind: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ty: u32,
    pub bit_offset: u32,
    pub bitfield_size: u32,
}

/// Types indexed by BTF type id (id 0 is void), and the string section (`.BTF.ext` records
/// name their sections and access strings by offsets into it).
#[derive(Debug, Default)]
pub struct Btf {
    pub types: Vec<Type>,
    pub strings: Vec<u8>,
}

const MAGIC: u16 = 0xeb9f;

/// Reads u32 words of a blob that starts with the BTF magic (`.BTF` and `.BTF.ext` both do),
/// in the byte order the magic shows.
#[derive(Clone, Copy)]
pub struct Words<'a> {
    data: &'a [u8],
    little_endian: bool,
}

impl<'a> Words<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, String> {
        let little_endian = match data.get(..2).map(|m| [m[0], m[1]]) {
            Some(m) if u16::from_le_bytes(m) == MAGIC => true,
            Some(m) if u16::from_be_bytes(m) == MAGIC => false,
            _ => return Err("no BTF magic".into()),
        };
        Ok(Words {
            data,
            little_endian,
        })
    }

    /// The u32 at byte `at`.
    pub fn at(&self, at: usize) -> Result<u32, String> {
        let bytes: [u8; 4] = at
            .checked_add(4)
            .and_then(|end| self.data.get(at..end))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("BTF truncated at byte {at}"))?;
        Ok(if self.little_endian {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl Btf {
    pub fn parse(data: &[u8]) -> Result<Btf, String> {
        let w = Words::new(data)?;
        let header_len = w.at(4)? as usize;
        let section = |off: usize, len: usize| {
            let start = header_len.checked_add(off)?;
            Some(start..start.checked_add(len)?)
        };
        let type_range = section(w.at(8)? as usize, w.at(12)? as usize)
            .filter(|r| r.end <= data.len())
            .ok_or("BTF type section out of bounds")?;
        let strings = section(w.at(16)? as usize, w.at(20)? as usize)
            .and_then(|r| data.get(r))
            .ok_or("BTF string section out of bounds")?
            .to_vec();
        let mut btf = Btf {
            types: vec![Type::Void],
            strings,
        };
        let mut pos = type_range.start;
        while pos < type_range.end {
            let (ty, next) = btf.parse_type(&w, pos)?;
            btf.types.push(ty);
            pos = next;
        }
        if pos != type_range.end {
            return Err("BTF type section overruns its length".into());
        }
        Ok(btf)
    }

    /// The type record at byte `pos` and where the next one starts.
    fn parse_type(&self, w: &Words, pos: usize) -> Result<(Type, usize), String> {
        let name = self.string(w.at(pos)?).to_string();
        let info = w.at(pos + 4)?;
        let size_or_type = w.at(pos + 8)?;
        let mut pos = pos + 12;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 == 1;
        let ty = match kind {
            1 => {
                let encoding = w.at(pos)? >> 24;
                pos += 4;
                Type::Int {
                    size: size_or_type,
                    signed: encoding & 1 != 0,
                }
            }
            2 => Type::Ptr {
                target: size_or_type,
            },
            3 => {
                let (elem, len) = (w.at(pos)?, w.at(pos + 8)?);
                pos += 12;
                Type::Array { elem, len }
            }
            4 | 5 => Type::Struct {
                name,
                union: kind == 5,
                size: size_or_type,
                members: self.parse_members(w, &mut pos, vlen, kflag)?,
            },
            6 | 19 => Type::Enum {
                name,
                size: size_or_type,
                signed: kflag,
                values: self.parse_enum_values(w, &mut pos, vlen, kind == 19, kflag)?,
            },
            7 => Type::Fwd { name, union: kflag },
            16 => Type::Float { size: size_or_type },
            8..=11 | 18 => Type::Alias {
                target: size_or_type,
            },
            12 => Type::Other { kind },
            13 => {
                pos += 8 * vlen;
                Type::Other { kind }
            }
            14 | 17 => {
                pos += 4;
                Type::Other { kind }
            }
            15 => {
                pos += 12 * vlen;
                Type::Other { kind }
            }
            _ => {
                return Err(format!(
                    "unknown BTF kind {kind} (type id {})",
                    self.types.len()
                ))
            }
        };
        Ok((ty, pos))
    }

    /// The `vlen` members of a struct or union starting at `*pos` (advanced past them);
    /// `kflag`: offsets carry bitfield sizes.
    fn parse_members(
        &self,
        w: &Words,
        pos: &mut usize,
        vlen: usize,
        kflag: bool,
    ) -> Result<Vec<Member>, String> {
        let mut members = Vec::with_capacity(vlen.min(4096));
        for _ in 0..vlen {
            let offset = w.at(*pos + 8)?;
            let (bit_offset, bitfield_size) = if kflag {
                (offset & 0xff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            members.push(Member {
                name: self.string(w.at(*pos)?).to_string(),
                ty: w.at(*pos + 4)?,
                bit_offset,
                bitfield_size,
            });
            *pos += 12;
        }
        Ok(members)
    }

    /// The `vlen` enumerators of an enum (or, `wide`, enum64) starting at `*pos` (advanced
    /// past them); `signed` from the type's kflag.
    fn parse_enum_values(
        &self,
        w: &Words,
        pos: &mut usize,
        vlen: usize,
        wide: bool,
        signed: bool,
    ) -> Result<Vec<(String, i128)>, String> {
        let mut values = Vec::with_capacity(vlen.min(4096));
        for _ in 0..vlen {
            let lo = w.at(*pos + 4)?;
            let value = match (wide, signed) {
                (false, true) => i128::from(lo as i32),
                (false, false) => i128::from(lo),
                (true, _) => {
                    let v = (u64::from(w.at(*pos + 8)?) << 32) | u64::from(lo);
                    if signed {
                        i128::from(v as i64)
                    } else {
                        i128::from(v)
                    }
                }
            };
            values.push((self.string(w.at(*pos)?).to_string(), value));
            *pos += if wide { 12 } else { 8 };
        }
        Ok(values)
    }

    pub fn get(&self, id: u32) -> Result<&Type, String> {
        self.types
            .get(id as usize)
            .ok_or_else(|| format!("BTF type id {id} out of range"))
    }

    /// The id `id` stands for once typedefs and qualifiers are looked through (bounded: a
    /// malformed blob could loop).
    pub fn skip_aliases(&self, mut id: u32) -> u32 {
        for _ in 0..64 {
            match self.types.get(id as usize) {
                Some(Type::Alias { target }) => id = *target,
                _ => break,
            }
        }
        id
    }

    /// The type `id` stands for once typedefs and qualifiers are looked through.
    pub fn resolve(&self, id: u32) -> Result<&Type, String> {
        match self.get(self.skip_aliases(id))? {
            Type::Alias { .. } => Err(format!("BTF alias chain too long at type id {id}")),
            ty => Ok(ty),
        }
    }

    /// The NUL-terminated string at `offset` of the string section ("" when out of range).
    pub fn string(&self, offset: u32) -> &str {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }
}

impl Type {
    /// The type's own name, for the kinds that are looked up by name.
    pub fn name(&self) -> &str {
        match self {
            Type::Struct { name, .. } | Type::Enum { name, .. } | Type::Fwd { name, .. } => name,
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_object_parses() {
        use object::{Object as _, ObjectSection as _};
        for object in crate::ALL {
            let elf = object::File::parse(object.bytes).expect("ELF");
            let section = elf.section_by_name(".BTF").expect(".BTF");
            let btf = Btf::parse(section.data().unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", object.name));
            assert!(btf.types.len() > 1, "{}", object.name);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut header = vec![0x9f, 0xeb, 1, 0];
        for word in [24u32, 0, 12, 12, 0] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        header.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0, 0]);
        assert!(Btf::parse(&header).is_err());
    }
}
