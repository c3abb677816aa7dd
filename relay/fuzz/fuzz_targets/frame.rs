//! The AF_XDP forwarder's frame views and rewrites on any bytes: parse, check (with the
//! checksums), and both rewrites in place. No panic, and a rewrite's result lies inside
//! the buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xturn_relay::afxdp::frame::{self, Rewrite};

fuzz_target!(|data: &[u8]| {
    let _ = frame::parse(data);
    let _ = frame::check(data, 0, data.len());
    // Room in front, as the UMEM headroom gives, for the ChannelData header.
    let mut buf = vec![0u8; 256];
    buf.extend_from_slice(data);
    let (start, len) = (256, data.len());
    let v4 = Rewrite {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: "198.51.100.1:50000".parse().unwrap(),
        dst: "198.51.100.2:7000".parse().unwrap(),
    };
    let v6 = Rewrite {
        src: "[2001:db8::1]:50000".parse().unwrap(),
        dst: "[2001:db8::2]:7000".parse().unwrap(),
        ..v4
    };
    for rw in [v4, v6] {
        let mut b = buf.clone();
        if let Ok((s, n)) = frame::channel_data_to_udp(&mut b, start, len, &rw) {
            assert!(s + n <= b.len());
            assert!(frame::parse(&b[s..s + n]).is_ok());
        }
        let mut b = buf.clone();
        if let Ok((s, n)) = frame::udp_to_channel_data(&mut b, start, len, 0x4000, &rw) {
            assert!(s + n <= b.len());
            assert!(frame::parse(&b[s..s + n]).is_ok());
        }
    }
});
