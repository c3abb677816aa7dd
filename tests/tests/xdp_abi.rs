//! The kernel/user ABI agrees on both sides: the committed object's maps (read from its
//! BTF with a reader written here, and from aya's own parser) have the names, map types,
//! sizes, struct member offsets and capacities that `xturn-xdp-common` defines, and it
//! carries the programs user space asks for. No root needed: only the file is read.

mod xdp_support;

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use xdp_support::OBJECT;
use xturn_xdp_common::{
    capacity, map_names, program_names, AllocStats, ChannelKey, ChannelValue, Config, Counter,
    Endpoint, Expiry, HopEntry, IfaceValue, ListenPort, ListenValue, PeerChannel, PeerChannelKey,
    PermissionKey, RelayValue,
};

// ------------------------------------------------------------------- ELF and BTF reader

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The bytes of the ELF64 (little-endian) section called `name`.
fn section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    assert_eq!(&elf[..4], b"\x7fELF", "not ELF");
    assert_eq!((elf[4], elf[5]), (2, 1), "not ELF64 little-endian");
    let shoff = u64_at(elf, 0x28) as usize;
    let shentsize = u16_at(elf, 0x3a) as usize;
    let shnum = u16_at(elf, 0x3c) as usize;
    let shstrndx = u16_at(elf, 0x3e) as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(elf, sh(shstrndx) + 24) as usize;
    (0..shnum).find_map(|i| {
        let n = strtab + u32_at(elf, sh(i)) as usize;
        let end = n + elf[n..].iter().position(|&c| c == 0)?;
        if &elf[n..end] != name.as_bytes() {
            return None;
        }
        let (off, size) = (
            u64_at(elf, sh(i) + 24) as usize,
            u64_at(elf, sh(i) + 32) as usize,
        );
        Some(&elf[off..off + size])
    })
}

#[derive(Debug, Clone)]
enum BtfType {
    Int {
        size: u32,
    },
    Ptr {
        to: u32,
    },
    Array {
        elem: u32,
        len: u32,
    },
    Struct {
        name: String,
        size: u32,
        members: Vec<(String, u32, u32)>,
    },
    Var {
        name: String,
        ty: u32,
    },
    Union {
        size: u32,
    },
    Typedef {
        ty: u32,
    },
    Other,
}

/// Parse `.BTF` (Documentation/bpf/btf.rst): a header, a type section, a string section.
fn parse_btf(b: &[u8]) -> Vec<BtfType> {
    assert_eq!(u16_at(b, 0), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(b, 4) as usize;
    let (type_off, type_len) = (u32_at(b, 8) as usize, u32_at(b, 12) as usize);
    let str_off = u32_at(b, 16) as usize;
    let types = &b[hdr_len + type_off..hdr_len + type_off + type_len];
    let strs = &b[hdr_len + str_off..];
    let name = |o: u32| {
        let s = &strs[o as usize..];
        String::from_utf8(s[..s.iter().position(|&c| c == 0).unwrap()].to_vec()).unwrap()
    };
    // Type id 0 is void.
    let mut out = vec![BtfType::Other];
    let mut p = 0;
    while p < types.len() {
        let (name_off, info, size_or_type) =
            (u32_at(types, p), u32_at(types, p + 4), u32_at(types, p + 8));
        p += 12;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31;
        let t = match kind {
            1 => {
                p += 4;
                BtfType::Int { size: size_or_type }
            }
            2 => BtfType::Ptr { to: size_or_type },
            3 => {
                let a = BtfType::Array {
                    elem: u32_at(types, p),
                    len: u32_at(types, p + 8),
                };
                p += 12;
                a
            }
            4 | 5 => {
                let mut members = Vec::new();
                for _ in 0..vlen {
                    let off = u32_at(types, p + 8);
                    let bits = if kind_flag == 1 { off & 0xff_ffff } else { off };
                    members.push((name(u32_at(types, p)), u32_at(types, p + 4), bits));
                    p += 12;
                }
                if kind == 4 {
                    BtfType::Struct {
                        name: name(name_off),
                        size: size_or_type,
                        members,
                    }
                } else {
                    BtfType::Union { size: size_or_type }
                }
            }
            6 => {
                p += 8 * vlen;
                BtfType::Other
            }
            13 => {
                p += 8 * vlen;
                BtfType::Other
            }
            14 => {
                p += 4;
                BtfType::Var {
                    name: name(name_off),
                    ty: size_or_type,
                }
            }
            15 | 19 => {
                p += 12 * vlen;
                BtfType::Other
            }
            17 => {
                p += 4;
                BtfType::Other
            }
            8 => BtfType::Typedef { ty: size_or_type },
            7 | 9..=12 | 16 | 18 => BtfType::Other,
            k => panic!("unknown BTF kind {k}"),
        };
        out.push(t);
    }
    out
}

/// Size in bytes of BTF type `id` (ints, arrays, structs; typedefs are not used here).
fn btf_size(types: &[BtfType], id: u32) -> u32 {
    match &types[id as usize] {
        BtfType::Int { size } => *size,
        BtfType::Array { elem, len } => btf_size(types, *elem) * len,
        BtfType::Struct { size, .. } | BtfType::Union { size } => *size,
        BtfType::Typedef { ty } => btf_size(types, *ty),
        t => panic!("no size for {t:?}"),
    }
}

/// A BTF-defined map: `struct { int (*type)[T]; K *key; V *value; int (*max_entries)[N]; ... }`.
#[derive(Debug)]
struct BtfMap {
    map_type: u32,
    key: u32,
    value: u32,
    max_entries: u32,
}

fn btf_maps(types: &[BtfType]) -> BTreeMap<String, BtfMap> {
    let array_len = |ptr: u32| match &types[ptr as usize] {
        BtfType::Ptr { to } => match &types[*to as usize] {
            BtfType::Array { len, .. } => *len,
            t => panic!("map field does not point to an array: {t:?}"),
        },
        t => panic!("map field is not a pointer: {t:?}"),
    };
    let pointee = |ptr: u32| match &types[ptr as usize] {
        BtfType::Ptr { to } => *to,
        t => panic!("map key/value is not a pointer: {t:?}"),
    };
    let mut maps = BTreeMap::new();
    for t in types {
        let BtfType::Var { name, ty } = t else {
            continue;
        };
        let BtfType::Struct { members, .. } = &types[*ty as usize] else {
            continue;
        };
        let field = |n: &str| {
            members
                .iter()
                .find(|m| m.0 == n)
                .unwrap_or_else(|| panic!("map {name} has no field {n}"))
                .1
        };
        maps.insert(
            name.clone(),
            BtfMap {
                map_type: array_len(field("type")),
                key: pointee(field("key")),
                value: pointee(field("value")),
                max_entries: array_len(field("max_entries")),
            },
        );
    }
    maps
}

// ------------------------------------------------------------ the Rust side of the ABI

/// A Rust type as the ABI sees it: name, size, and (for structs) every member's offset
/// and size. `layout!` lists the members; the BTF side must have exactly these.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    name: &'static str,
    size: u32,
    members: Vec<(String, u32, u32)>,
}

macro_rules! layout {
    ($t:ident { $($f:ident),* $(,)? }) => {{
        let v: $t = Default::default();
        Layout {
            name: stringify!($t),
            size: size_of::<$t>() as u32,
            members: vec![$((
                stringify!($f).to_string(),
                offset_of!($t, $f) as u32,
                std::mem::size_of_val(&v.$f) as u32,
            )),*],
        }
    }};
    (scalar $t:ty) => {
        Layout { name: "", size: size_of::<$t>() as u32, members: Vec::new() }
    };
}

fn btf_layout(types: &[BtfType], id: u32) -> Layout {
    match &types[id as usize] {
        BtfType::Struct {
            name,
            size,
            members,
        } => Layout {
            name: Box::leak(name.clone().into_boxed_str()),
            size: *size,
            members: members
                .iter()
                .map(|(n, t, bits)| {
                    assert_eq!(bits % 8, 0, "{name}.{n} is a bit field");
                    (n.clone(), bits / 8, btf_size(types, *t))
                })
                .collect(),
        },
        _ => Layout {
            name: "",
            size: btf_size(types, id),
            members: Vec::new(),
        },
    }
}

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_MAP_TYPE_DEVMAP_HASH: u32 = 25;

/// (name, map type, key, value, max entries) as user space expects them.
fn expected_maps() -> Vec<(&'static str, u32, Layout, Layout, u32)> {
    let endpoint = || layout!(Endpoint { ip, port, _pad });
    let expiry = || layout!(Expiry { expires_ns });
    vec![
        (
            map_names::CONFIG,
            BPF_MAP_TYPE_ARRAY,
            layout!(scalar u32),
            layout!(Config {
                flags,
                max_steer_len,
                allocation_bps,
                user_bps,
                limits_epoch_ns
            }),
            1,
        ),
        (
            map_names::LISTEN,
            BPF_MAP_TYPE_HASH,
            endpoint(),
            layout!(ListenValue { reserved }),
            capacity::LISTEN,
        ),
        (
            map_names::LISTEN_PORTS,
            BPF_MAP_TYPE_ARRAY,
            layout!(scalar u32),
            layout!(ListenPort { v6, v4, flags }),
            capacity::LISTEN_PORTS,
        ),
        (
            map_names::CHANNELS,
            BPF_MAP_TYPE_HASH,
            layout!(ChannelKey {
                client_ip,
                server_ip,
                client_port,
                server_port,
                channel,
                _pad
            }),
            layout!(ChannelValue {
                peer_ip,
                relay_ip,
                peer_port,
                relay_port,
                _pad,
                expires_ns,
                hop,
                relay_expires_ns,
                permission_expires_ns,
                stats_slot,
                user_slot
            }),
            capacity::CHANNELS,
        ),
        (
            map_names::PERMISSIONS,
            BPF_MAP_TYPE_HASH,
            layout!(PermissionKey {
                peer_ip,
                relay_port,
                _pad
            }),
            expiry(),
            capacity::PERMISSIONS,
        ),
        (
            map_names::RELAYS,
            BPF_MAP_TYPE_HASH,
            endpoint(),
            layout!(RelayValue {
                expires_ns,
                client_ip,
                server_ip,
                client_port,
                server_port,
                hop,
                flags,
                stats_slot,
                user_slot
            }),
            capacity::RELAYS,
        ),
        (
            map_names::IFACES,
            BPF_MAP_TYPE_ARRAY,
            layout!(scalar u32),
            layout!(IfaceValue { xsk_slot, flags }),
            capacity::IFACES,
        ),
        (
            map_names::XSKS,
            BPF_MAP_TYPE_XSKMAP,
            layout!(scalar u32),
            layout!(scalar u32),
            capacity::XSKS,
        ),
        (
            map_names::COUNTERS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            layout!(scalar u32),
            layout!(scalar u64),
            Counter::COUNT,
        ),
        (
            map_names::HOPS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            layout!(scalar u32),
            layout!(HopEntry {
                checked_ns,
                hop_id,
                ingress_ifindex,
                egress_ifindex,
                dst_mac,
                src_mac
            }),
            capacity::HOPS,
        ),
        (
            map_names::PEER_CHANNELS,
            BPF_MAP_TYPE_HASH,
            layout!(PeerChannelKey {
                peer_ip,
                peer_port,
                relay_port
            }),
            layout!(PeerChannel {
                expires_ns,
                permission_expires_ns,
                channel,
                _pad
            }),
            capacity::CHANNELS,
        ),
        (
            map_names::DEVS,
            BPF_MAP_TYPE_DEVMAP_HASH,
            layout!(scalar u32),
            // The kernel's struct bpf_devmap_val: the interface, and a program fd/id union.
            Layout {
                name: "bpf_devmap_val",
                size: 8,
                members: vec![("ifindex".into(), 0, 4), ("bpf_prog".into(), 4, 4)],
            },
            capacity::DEVS,
        ),
        (
            map_names::ALLOC_STATS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            layout!(scalar u32),
            layout!(AllocStats {
                to_peer_packets,
                to_peer_bytes,
                to_client_packets,
                to_client_bytes
            }),
            capacity::RELAYS,
        ),
        // Sized by user space when limits apply (limits::entries).
        (
            map_names::LIMITS,
            BPF_MAP_TYPE_ARRAY,
            layout!(scalar u32),
            layout!(scalar u64),
            1,
        ),
    ]
}

#[test]
fn xdp_object_maps_match_the_common_crate() {
    let btf = parse_btf(section(OBJECT, ".BTF").expect("the object has BTF"));
    let maps = btf_maps(&btf);
    let names: Vec<&str> = maps.keys().map(String::as_str).collect();
    let mut want_names = map_names::ALL.to_vec();
    want_names.sort();
    assert_eq!(names, want_names, "map names in the object");
    for (name, map_type, key, value, max_entries) in expected_maps() {
        let m = &maps[name];
        assert_eq!(m.map_type, map_type, "{name}: map type");
        assert_eq!(btf_layout(&btf, m.key), key, "{name}: key layout");
        assert_eq!(btf_layout(&btf, m.value), value, "{name}: value layout");
        assert_eq!(m.max_entries, max_entries, "{name}: max entries");
    }
}

/// The same facts through aya's own object parser (what `Ebpf::load` creates).
#[test]
fn xdp_object_as_aya_sees_it() {
    let obj = aya_obj::Object::parse(OBJECT).expect("aya parses the object");
    for (name, map_type, key, value, max_entries) in expected_maps() {
        let m = obj
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("aya finds no map {name}"));
        assert_eq!(m.map_type(), map_type, "{name}");
        assert_eq!(m.key_size(), key.size, "{name}: key size");
        assert_eq!(m.value_size(), value.size, "{name}: value size");
        assert_eq!(m.max_entries(), max_entries, "{name}: max entries");
    }
    // User space maps the bandwidth buckets into its memory.
    const BPF_F_MMAPABLE: u32 = 1 << 10;
    let limits = &obj.maps[map_names::LIMITS];
    assert_eq!(
        limits.map_flags() & BPF_F_MMAPABLE,
        BPF_F_MMAPABLE,
        "XT_LIMITS mmapable"
    );
    // Besides the named maps only global data (.rodata: the CRC-32 table).
    let mut others: Vec<&str> = obj
        .maps
        .keys()
        .map(String::as_str)
        .filter(|n| !map_names::ALL.contains(n))
        .collect();
    others.sort();
    assert_eq!(others, [".rodata"], "unexpected maps");
    for p in [program_names::XTURN, program_names::PASS] {
        assert!(obj.programs.contains_key(p), "program {p} missing");
    }
}

/// The reader above is not vacuous: a layout that differs in one member is told apart.
#[test]
fn xdp_abi_check_detects_a_moved_member() {
    let btf = parse_btf(section(OBJECT, ".BTF").unwrap());
    let maps = btf_maps(&btf);
    let mut wrong = layout!(Endpoint { ip, port, _pad });
    wrong.members.swap(1, 2);
    assert_ne!(btf_layout(&btf, maps[map_names::LISTEN].key), wrong);
}
