//! ChannelData views and the data plane's per-packet paths (client to peer, peer to
//! client) on a table with one allocation, channel and permission: no panic, and what is
//! relayed lies inside the datagram.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use xturn_control::wire::{ChannelData, TransactionId};
use xturn_control::{Change, ChannelNumber, ClientAddr, DataPlane, FiveTuple, PeerAddr, RelayAddr};

fuzz_target!(|data: &[u8]| {
    let _ = ChannelData::new_checked(data);
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let ft = FiveTuple::udp(ClientAddr("192.0.2.2:4000".parse().unwrap()), "192.0.2.1:3478".parse().unwrap());
    let relay = RelayAddr("198.51.100.1:50000".parse().unwrap());
    let peer = PeerAddr("198.51.100.2:7000".parse().unwrap());
    let mut dp = DataPlane::new();
    for o in [
        Change::InstallAllocation {
            five_tuple: ft,
            relay,
            expires: later,
            user: 0,
        },
        Change::InstallPermission {
            relay,
            peer: peer.0.ip(),
            expires: later,
        },
        Change::InstallChannel {
            five_tuple: ft,
            relay,
            channel: ChannelNumber::new(0x4000).unwrap(),
            peer,
            expires: later,
        },
    ] {
        dp.apply(&o);
    }
    if let Some(to) = dp.client_to_peer(now, ft, data) {
        assert!(to.payload.end <= data.len());
    }
    let mut out = Vec::new();
    let _ = dp.peer_to_client(now, relay, peer, data, TransactionId([7; 12]), &mut out);
});
