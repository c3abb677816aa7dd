//! Tests of the ring policy and the frame accounting on [`MemRings`] (no root).

use super::*;
use proptest::prelude::*;

fn frame(tag: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(7).wrapping_add(tag) as u8)
        .collect();
    v[..4].copy_from_slice(&tag.to_be_bytes());
    v
}

fn recv_all(m: &mut MemRings, port: usize) -> Vec<Desc> {
    let mut v = Vec::new();
    m.recv(port, &mut v, usize::MAX);
    v
}

#[test]
fn new_prepopulates_fill_rings() {
    let m = MemRings::new(2, 2048, 64);
    assert_eq!(m.frames(), 64);
    assert_eq!(m.ports(), 2);
    assert_eq!(m.frame_size(), 2048);
    // min(ring 64, 64 / (2 x 2)) = 16 per port.
    assert_eq!((m.fill_frames(0), m.fill_frames(1)), (16, 16));
    assert_eq!(m.free_frames(), 32);
    assert_eq!(m.caller_frames(), 0);
    m.check_accounting().unwrap();
}

#[test]
fn receive_rewrite_send_complete() {
    let mut m = MemRings::new(1, 2048, 32);
    let f = frame(1, 100);
    assert!(m.inject(0, &f));
    let d = recv_all(&mut m, 0);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].len, 100);
    assert_eq!(d[0].addr % 2048, RX_HEADROOM as u64);
    assert_eq!(m.caller_frames(), 1);
    // Rewrite in place: prepend 4 bytes in the headroom.
    let (chunk, off) = m.chunk_mut(d[0].addr);
    assert_eq!(off, RX_HEADROOM);
    assert_eq!(chunk.len(), 2048);
    assert_eq!(&chunk[off..off + 100], &f[..]);
    chunk[off - 4..off].copy_from_slice(b"HDR!");
    let out = Desc {
        addr: d[0].addr - 4,
        len: 104,
    };
    assert_eq!(m.send(0, &[out]), 1);
    assert_eq!(m.caller_frames(), 0);
    assert_eq!(m.tx_frames(0), 1);
    let sent = m.take_sent(0);
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0][..4], b"HDR!");
    assert_eq!(&sent[0][4..], &f[..]);
    // The completion returns the frame at the next service.
    assert_eq!(m.tx_frames(0), 1);
    m.service();
    assert_eq!(m.tx_frames(0), 0);
    assert_eq!(m.free_frames() + m.fill_frames(0), 32);
    assert_eq!(m.counters(0).completed, 1);
    m.check_accounting().unwrap();
}

#[test]
fn metadata_comes_first_in_the_data() {
    let mut m = MemRings::new(1, 4096, 16);
    assert!(m.inject_with_meta(0, b"META1234", &frame(9, 60)));
    let d = recv_all(&mut m, 0)[0];
    assert_eq!(d.len, 68);
    let (chunk, off) = m.chunk_mut(d.addr);
    assert_eq!(&chunk[off..off + 8], b"META1234");
    assert_eq!(&chunk[off + 8..off + 68], &frame(9, 60)[..]);
    m.free(d.addr);
    m.check_accounting().unwrap();
}

#[test]
fn shared_umem_receive_on_one_port_send_on_another() {
    let mut m = MemRings::new(2, 2048, 64);
    for i in 0..10 {
        assert!(m.inject(0, &frame(i, 64 + i as usize)));
    }
    let d = recv_all(&mut m, 0);
    assert_eq!(d.len(), 10);
    assert_eq!(m.send(1, &d), 10);
    assert_eq!(m.tx_frames(1), 10);
    let sent = m.take_sent(1);
    assert_eq!(sent.len(), 10);
    for (i, s) in sent.iter().enumerate() {
        assert_eq!(s, &frame(i as u32, 64 + i));
    }
    assert!(m.take_sent(0).is_empty());
    m.service();
    assert_eq!(m.tx_frames(1), 0);
    // Port 0 lost 10 fill frames, and got them back from the free list.
    assert_eq!(m.fill_frames(0), 16);
    m.check_accounting().unwrap();
}

#[test]
fn copy_mode_kicks_every_32_descriptors() {
    let mut m = MemRings::new(1, 2048, 512);
    // 128 in the fill ring: inject 100.
    for i in 0..100 {
        assert!(m.inject(0, &frame(i, 60)), "inject {i}");
    }
    let d = recv_all(&mut m, 0);
    assert_eq!(d.len(), 100);
    assert_eq!(m.send(0, &d), 100);
    // The kernel sends 32 per sendto: 4 kicks, nothing left behind.
    assert_eq!(m.kicks(0), 4);
    assert_eq!(m.tx_pending(0), 0);
    let sent = m.take_sent(0);
    assert_eq!(sent.len(), 100);
    for (i, s) in sent.iter().enumerate() {
        assert_eq!(&s[..4], &(i as u32).to_be_bytes());
    }
    m.service();
    m.check_accounting().unwrap();
    assert_eq!(m.caller_frames() + m.tx_frames(0), 0);
}

#[test]
fn tx_limited_by_completion_ring_is_finished_by_service() {
    // Ring size 8: the completion ring holds 8, so transmit stops until the test takes
    // (completes) what is on the wire; then service reaps and kicks the rest.
    let mut cfg = XskConfig::new(2048, 64);
    cfg.ring_size = 8;
    cfg.fill_per_port = 8;
    let mut m = MemRings::with_config(1, cfg).unwrap();
    let mut held = Vec::new();
    for round in 0..4 {
        for i in 0..8 {
            assert!(m.inject(0, &frame(round * 8 + i, 60)));
        }
        held.extend(recv_all(&mut m, 0));
        m.service();
    }
    assert_eq!(held.len(), 32);
    // TX ring 8 and completion ring 8: at most 8 in flight.
    let q = m.send(0, &held);
    assert_eq!(q, 8);
    assert_eq!(m.counters(0).tx_full, 24);
    assert_eq!(m.send(0, &held[q..]), 0);
    let mut sent = m.take_sent(0);
    let mut at = q;
    for _ in 0..10 {
        m.service();
        at += m.send(0, &held[at..]);
        sent.extend(m.take_sent(0));
    }
    assert_eq!(at, 32);
    m.service();
    sent.extend(m.take_sent(0));
    m.service();
    assert_eq!(sent.len(), 32);
    for (i, s) in sent.iter().enumerate() {
        assert_eq!(&s[..4], &(i as u32).to_be_bytes());
    }
    m.check_accounting().unwrap();
    assert_eq!(m.free_frames() + m.fill_frames(0), 64);
}

#[test]
fn empty_fill_ring_and_full_rx_ring_drop_like_the_kernel() {
    let mut cfg = XskConfig::new(2048, 16);
    cfg.ring_size = 8;
    cfg.fill_per_port = 8;
    let mut m = MemRings::with_config(1, cfg).unwrap();
    for i in 0..8 {
        assert!(m.inject(0, &frame(i, 60)));
    }
    // RX ring (8) full.
    assert!(!m.inject(0, &frame(8, 60)));
    assert_eq!(m.stats(0).rx_ring_full, 1);
    let d = recv_all(&mut m, 0);
    // Fill ring empty until service refills it.
    assert!(!m.inject(0, &frame(9, 60)));
    assert_eq!(m.stats(0).rx_fill_ring_empty_descs, 1);
    assert_eq!(m.stats(0).rx_dropped, 1);
    m.service();
    assert_eq!(m.fill_frames(0), 8);
    assert!(m.inject(0, &frame(10, 60)));
    // Too large for a 2048-byte frame with 256 bytes of headroom.
    assert!(!m.inject(0, &frame(11, 1793)));
    assert!(m.inject(0, &frame(12, 1792)));
    for x in d {
        m.free(x.addr);
    }
    m.check_accounting().unwrap();
}

#[test]
fn refill_shares_scarce_frames_round_robin() {
    let mut cfg = XskConfig::new(2048, 12);
    cfg.ring_size = 8;
    cfg.fill_per_port = 6;
    let mut m = MemRings::with_config(2, cfg).unwrap();
    assert_eq!((m.fill_frames(0), m.fill_frames(1)), (6, 6));
    // Hold 6 frames from port 0: only they can come back.
    for i in 0..6 {
        assert!(m.inject(0, &frame(i, 60)));
    }
    let d = recv_all(&mut m, 0);
    assert_eq!(m.free_frames(), 0);
    for x in &d[..4] {
        m.free(x.addr);
    }
    m.service();
    assert_eq!(m.fill_frames(0) + m.fill_frames(1), 10);
    for x in &d[4..] {
        m.free(x.addr);
    }
    m.service();
    assert_eq!((m.fill_frames(0), m.fill_frames(1)), (6, 6));
    m.check_accounting().unwrap();
}

#[test]
fn fill_need_wakeup_is_honoured() {
    let mut m = MemRings::new(1, 2048, 16);
    m.service();
    assert_eq!(m.counters(0).rx_wakeups, 0);
    m.set_fill_need_wakeup(0, true);
    m.service();
    assert_eq!(m.counters(0).rx_wakeups, 1);
}

#[test]
#[should_panic(expected = "not owned by the caller")]
fn chunk_of_a_frame_in_the_fill_ring_panics() {
    let mut m = MemRings::new(1, 2048, 16);
    // Frame 0 is in the fill ring.
    m.chunk_mut(RX_HEADROOM as u64);
}

#[test]
#[should_panic(expected = "free")]
fn double_free_panics() {
    let mut m = MemRings::new(1, 2048, 16);
    assert!(m.inject(0, &frame(1, 60)));
    let d = recv_all(&mut m, 0)[0];
    m.free(d.addr);
    m.free(d.addr);
}

#[test]
#[should_panic(expected = "not owned by the caller")]
fn sending_a_sent_frame_panics() {
    let mut m = MemRings::new(2, 2048, 16);
    assert!(m.inject(0, &frame(1, 60)));
    let d = recv_all(&mut m, 0)[0];
    assert_eq!(m.send(1, &[d]), 1);
    m.send(0, &[d]);
}

#[test]
#[should_panic(expected = "crossing")]
fn a_descriptor_crossing_its_chunk_panics() {
    let mut m = MemRings::new(1, 2048, 16);
    assert!(m.inject(0, &frame(1, 60)));
    let d = recv_all(&mut m, 0)[0];
    m.send(
        0,
        &[Desc {
            addr: d.addr,
            len: 2048 - RX_HEADROOM as u32 + 1,
        }],
    );
}

#[test]
fn config_validation() {
    let ok = XskConfig::new(2048, 64);
    assert!(ok.validate(2).is_ok());
    let mut c = ok;
    c.frame_size = 1024;
    assert!(c.validate(1).is_err());
    let mut c = ok;
    c.ring_size = 100;
    assert!(c.validate(1).is_err());
    assert!(ok.validate(0).is_err());
    let mut c = ok;
    c.fill_per_port = 40;
    assert!(c.validate(2).is_err());
    assert_eq!(frame_size_for_mtu(1500), 2048);
    assert_eq!(frame_size_for_mtu(1774), 2048);
    assert_eq!(frame_size_for_mtu(1775), 4096);
    assert_eq!(frame_size_for_mtu(3000), 4096);
}

/// One step of a random forwarder-like workload.
#[derive(Debug, Clone)]
enum Op {
    Inject {
        port: usize,
        len: usize,
    },
    Recv {
        port: usize,
        max: usize,
    },
    /// Send the `n` oldest held frames on `port`.
    Send {
        port: usize,
        n: usize,
    },
    /// Free the `n` newest held frames.
    Free {
        n: usize,
    },
    TakeSent {
        port: usize,
    },
    Service,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 1..1793usize).prop_map(|(port, len)| Op::Inject { port, len }),
        2 => (0..3usize, 0..40usize).prop_map(|(port, max)| Op::Recv { port, max }),
        2 => (0..3usize, 0..50usize).prop_map(|(port, n)| Op::Send { port, n }),
        1 => (0..10usize).prop_map(|n| Op::Free { n }),
        2 => (0..3usize).prop_map(|port| Op::TakeSent { port }),
        2 => Just(Op::Service),
    ]
}

proptest! {
    /// Whatever the forwarder does, every frame keeps exactly one owner, the total never
    /// changes, and every transmitted frame carries exactly the bytes that were received
    /// into it, in send order per port.
    #[test]
    fn frames_are_never_lost_or_shared(ops in prop::collection::vec(op(), 1..300)) {
        let mut cfg = XskConfig::new(2048, 96);
        cfg.ring_size = 16;
        let mut m = MemRings::with_config(3, cfg).unwrap();
        let mut tag = 0u32;
        // Held frames with the payload expected in them.
        let mut held: Vec<(Desc, Vec<u8>)> = Vec::new();
        let mut injected: std::collections::HashMap<u32, Vec<u8>> = Default::default();
        let mut expect_sent: Vec<std::collections::VecDeque<Vec<u8>>> = vec![Default::default(); 3];
        for o in ops {
            match o {
                Op::Inject { port, len } => {
                    let f = frame(tag, len.max(4));
                    if m.inject(port, &f) {
                        injected.insert(tag, f);
                    }
                    tag += 1;
                }
                Op::Recv { port, max } => {
                    let mut v = Vec::new();
                    let n = m.recv(port, &mut v, max);
                    prop_assert_eq!(n, v.len());
                    prop_assert!(n <= max);
                    for d in v {
                        let b = m.bytes(d);
                        let t = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        let was = injected.remove(&t);
                        prop_assert_eq!(was.as_ref(), Some(&b));
                        held.push((d, b));
                    }
                }
                Op::Send { port, n } => {
                    let n = n.min(held.len());
                    let batch: Vec<Desc> = held[..n].iter().map(|(d, _)| *d).collect();
                    let q = m.send(port, &batch);
                    prop_assert!(q <= n);
                    for (_, b) in held.drain(..q) {
                        expect_sent[port].push_back(b);
                    }
                }
                Op::Free { n } => {
                    for _ in 0..n.min(held.len()) {
                        let (d, _) = held.pop().unwrap();
                        m.free(d.addr);
                    }
                }
                Op::TakeSent { port } => {
                    for s in m.take_sent(port) {
                        prop_assert_eq!(Some(s), expect_sent[port].pop_front());
                    }
                }
                Op::Service => m.service(),
            }
            prop_assert!(m.check_accounting().is_ok(), "{:?}", m.check_accounting());
            prop_assert_eq!(m.caller_frames(), held.len());
        }
        // Drain: give everything back, and every frame comes home.
        for (d, _) in held.drain(..) {
            m.free(d.addr);
        }
        for _ in 0..8 {
            m.service();
            for (p, expect) in expect_sent.iter_mut().enumerate() {
                for s in m.take_sent(p) {
                    prop_assert_eq!(Some(s), expect.pop_front());
                }
            }
        }
        prop_assert!(expect_sent.iter().all(|q| q.is_empty()));
        let in_fill: usize = (0..3).map(|p| m.fill_frames(p)).sum();
        let in_tx: usize = (0..3).map(|p| m.tx_frames(p)).sum();
        prop_assert_eq!(in_tx, 0);
        prop_assert_eq!(m.free_frames() + in_fill, 96);
        m.check_accounting().unwrap();
    }
}

#[test]
fn set_thread_nice_applies_to_the_calling_thread_only() {
    assert_eq!(
        set_thread_nice(20).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        set_thread_nice(-21).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let before = raw::thread_nice();
    // Raising the value needs no privilege.
    let inside = std::thread::spawn(|| {
        set_thread_nice(7).unwrap();
        raw::thread_nice()
    })
    .join()
    .unwrap();
    assert_eq!(inside, 7);
    assert_eq!(
        raw::thread_nice(),
        before,
        "another thread's value is untouched"
    );
}
