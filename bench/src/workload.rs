//! What the generator sends and how it checks what comes back, per mode: STUN Binding
//! requests (answers must carry the socket's own address in XOR-MAPPED-ADDRESS and a valid
//! FINGERPRINT) and ChannelData with checkable payloads (echoes must come back on the
//! flow's channel, byte-exact, with a sequence number that was sent).

use crate::payload;
use crate::stats::Invalid;
use std::net::SocketAddr;
use xturn_control::wire::{
    attr, channel_data, integrity, looks_like_channel_data, ChannelData, Class, Message, Method,
    MAGIC_COOKIE,
};

/// The per-flow facts a workload needs to build and check datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowId {
    /// Index of the flow (allocation) in the generator, carried in payloads.
    pub idx: u32,
    /// The socket's own address (what XOR-MAPPED-ADDRESS must say).
    pub local: SocketAddr,
    /// ChannelData channel number of the flow.
    pub channel: u16,
}

/// A checked answer: which sequence number it answers, when that was sent (ns on the
/// generator's clock) and how many payload bytes it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub seq: u64,
    pub sent_ns: u64,
    pub payload_len: usize,
}

pub trait Workload: Sync {
    /// Build datagram `seq` of `flow` into `buf` (SLOT bytes) and return its length.
    fn build(&self, flow: &FlowId, seq: u64, now_ns: u64, buf: &mut [u8]) -> usize;
    /// Check a received datagram of `flow`.
    fn check(&self, flow: &FlowId, data: &[u8]) -> Result<Answer, Invalid>;
}

/// ChannelData with a [`payload`] of `size` bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChannelDataLoad {
    pub size: usize,
}

impl Workload for ChannelDataLoad {
    fn build(&self, flow: &FlowId, seq: u64, now_ns: u64, buf: &mut [u8]) -> usize {
        let total = channel_data::HEADER_LEN + self.size;
        channel_data::write_header(buf, flow.channel, self.size as u16);
        payload::write(
            &mut buf[channel_data::HEADER_LEN..total],
            flow.idx,
            seq,
            now_ns,
        );
        total
    }

    fn check(&self, flow: &FlowId, data: &[u8]) -> Result<Answer, Invalid> {
        if !looks_like_channel_data(data) {
            return Err(Invalid::NotOurs);
        }
        let cd = ChannelData::new_checked(data).map_err(|_| Invalid::BadChannelData)?;
        if cd.channel() != flow.channel {
            return Err(Invalid::WrongChannel);
        }
        let p = cd.payload();
        if p.len() != self.size {
            return Err(Invalid::WrongLength);
        }
        let h = payload::check(p).map_err(|_| Invalid::BadPayload)?;
        if h.flow != flow.idx {
            return Err(Invalid::WrongFlow);
        }
        Ok(Answer {
            seq: h.seq,
            sent_ns: h.sent_ns,
            payload_len: p.len(),
        })
    }
}

/// STUN Binding requests with FINGERPRINT. The transaction id carries everything needed
/// to check an answer without per-request state:
/// `tag ^ flow (4 bytes) | seq (u32) | send time in µs since epoch_ns (u32)`.
#[derive(Debug, Clone, Copy)]
pub struct StunLoad {
    pub tag: u32,
    pub epoch_ns: u64,
}

/// Length of a Binding request with only FINGERPRINT.
pub const BINDING_LEN: usize = 28;

/// Write a Binding request with FINGERPRINT and transaction id `tid` into `buf`.
pub fn write_binding_request(buf: &mut [u8], tid: &[u8; 12]) -> usize {
    buf[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    buf[2..4].copy_from_slice(&8u16.to_be_bytes());
    buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf[8..20].copy_from_slice(tid);
    buf[20..22].copy_from_slice(&attr::FINGERPRINT.to_be_bytes());
    buf[22..24].copy_from_slice(&4u16.to_be_bytes());
    let crc = integrity::fingerprint(&buf[..20]);
    buf[24..28].copy_from_slice(&crc.to_be_bytes());
    BINDING_LEN
}

impl StunLoad {
    fn tid(&self, flow: &FlowId, seq: u64, now_ns: u64) -> [u8; 12] {
        let mut t = [0u8; 12];
        t[0..4].copy_from_slice(&(self.tag ^ flow.idx).to_be_bytes());
        t[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        let us = (now_ns.saturating_sub(self.epoch_ns) / 1000) as u32;
        t[8..12].copy_from_slice(&us.to_be_bytes());
        t
    }
}

impl Workload for StunLoad {
    fn build(&self, flow: &FlowId, seq: u64, now_ns: u64, buf: &mut [u8]) -> usize {
        write_binding_request(buf, &self.tid(flow, seq, now_ns))
    }

    fn check(&self, flow: &FlowId, data: &[u8]) -> Result<Answer, Invalid> {
        let m = Message::new_checked(data).map_err(|_| Invalid::NotOurs)?;
        if m.method() != Method::Binding || m.class() != Class::Success {
            return Err(Invalid::NotBindingSuccess);
        }
        let t = m.transaction_id().0;
        if u32::from_be_bytes([t[0], t[1], t[2], t[3]]) != self.tag ^ flow.idx {
            return Err(Invalid::UnknownTransaction);
        }
        match m.check_fingerprint() {
            Ok(true) => {}
            Ok(false) => return Err(Invalid::NoFingerprint),
            Err(_) => return Err(Invalid::BadFingerprint),
        }
        let a = m
            .attribute(attr::XOR_MAPPED_ADDRESS)
            .ok_or(Invalid::NoMappedAddress)?;
        let mapped = attr::decode_xor_address(a.value, &m.transaction_id())
            .map_err(|_| Invalid::NoMappedAddress)?;
        if mapped != flow.local {
            return Err(Invalid::WrongMappedAddress);
        }
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]) as u64;
        let us = u32::from_be_bytes([t[8], t[9], t[10], t[11]]) as u64;
        Ok(Answer {
            seq,
            sent_ns: self.epoch_ns + us * 1000,
            payload_len: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xturn_control::wire::{MessageBuilder, TransactionId};

    fn flow() -> FlowId {
        FlowId {
            idx: 5,
            local: "192.0.2.2:40000".parse().unwrap(),
            channel: 0x4005,
        }
    }

    #[test]
    fn binding_request_matches_control_builder() {
        let tid = [9u8, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0xff, 0x10];
        let mut b = [0u8; 64];
        let n = write_binding_request(&mut b, &tid);
        assert_eq!(
            &b[..n],
            &xturn_control::client::binding_request(TransactionId(tid), true)[..]
        );
    }

    /// A Binding success response as a server would send it.
    fn response(tid: TransactionId, mapped: SocketAddr, fingerprint: bool) -> Vec<u8> {
        let mut b = MessageBuilder::new(Method::Binding, Class::Success, tid);
        b.xor_addr(attr::XOR_MAPPED_ADDRESS, mapped);
        b.attr(attr::SOFTWARE, b"test");
        if fingerprint {
            b.fingerprint();
        }
        b.finish()
    }

    #[test]
    fn stun_answers_are_validated() {
        let f = flow();
        let w = StunLoad {
            tag: 0xABCD_0000,
            epoch_ns: 1_000_000,
        };
        let mut req = [0u8; 64];
        let n = w.build(&f, 42, 1_000_000 + 7_000, &mut req);
        let tid = Message::new_checked(&req[..n]).unwrap().transaction_id();

        let ok = response(tid, f.local, true);
        assert_eq!(
            w.check(&f, &ok),
            Ok(Answer {
                seq: 42,
                sent_ns: 1_007_000,
                payload_len: 0
            })
        );
        assert_eq!(
            w.check(&f, &response(tid, f.local, false)),
            Err(Invalid::NoFingerprint)
        );
        let mut bad_fp = ok.clone();
        let l = bad_fp.len();
        bad_fp[l - 1] ^= 1;
        assert_eq!(w.check(&f, &bad_fp), Err(Invalid::BadFingerprint));
        assert_eq!(
            w.check(&f, &response(tid, "192.0.2.2:40001".parse().unwrap(), true)),
            Err(Invalid::WrongMappedAddress)
        );
        let mut other = tid;
        other.0[0] ^= 0x80;
        assert_eq!(
            w.check(&f, &response(other, f.local, true)),
            Err(Invalid::UnknownTransaction)
        );
        // Another flow's answer on this socket is not ours either.
        let f2 = FlowId { idx: 6, ..f };
        assert_eq!(w.check(&f2, &ok), Err(Invalid::UnknownTransaction));
        let mut err = MessageBuilder::new(Method::Binding, Class::Error, tid);
        err.error_code(400, "Bad Request");
        assert_eq!(w.check(&f, &err.finish()), Err(Invalid::NotBindingSuccess));
        let mut no_mapped = MessageBuilder::new(Method::Binding, Class::Success, tid);
        no_mapped.fingerprint();
        assert_eq!(
            w.check(&f, &no_mapped.finish()),
            Err(Invalid::NoMappedAddress)
        );
        assert_eq!(w.check(&f, b"garbage"), Err(Invalid::NotOurs));
        assert_eq!(w.check(&f, &[]), Err(Invalid::NotOurs));
    }

    #[test]
    fn channel_data_round_trip_and_damage() {
        let f = flow();
        let w = ChannelDataLoad { size: 100 };
        let mut b = [0u8; 2048];
        let n = w.build(&f, 9, 555, &mut b);
        assert_eq!(n, 104);
        assert_eq!(&b[..4], &[0x40, 0x05, 0x00, 100]);
        let d = &b[..n];
        assert_eq!(
            w.check(&f, d),
            Ok(Answer {
                seq: 9,
                sent_ns: 555,
                payload_len: 100
            })
        );
        // Padding after the ChannelData (allowed over UDP) is ignored.
        let mut padded = d.to_vec();
        padded.extend_from_slice(&[0, 0, 0, 0]);
        assert!(w.check(&f, &padded).is_ok());

        let other_channel = FlowId {
            channel: 0x4006,
            ..f
        };
        assert_eq!(w.check(&other_channel, d), Err(Invalid::WrongChannel));
        let other_flow = FlowId { idx: 4, ..f };
        assert_eq!(w.check(&other_flow, d), Err(Invalid::WrongFlow));
        let mut corrupt = d.to_vec();
        corrupt[80] ^= 0xFF;
        assert_eq!(w.check(&f, &corrupt), Err(Invalid::BadPayload));
        assert_eq!(w.check(&f, &d[..50]), Err(Invalid::BadChannelData));
        let short = ChannelDataLoad { size: 99 };
        assert_eq!(short.check(&f, d), Err(Invalid::WrongLength));
        // A STUN message is not ChannelData.
        let stun = xturn_control::client::binding_request(TransactionId([1; 12]), true);
        assert_eq!(w.check(&f, &stun), Err(Invalid::NotOurs));
    }
}
