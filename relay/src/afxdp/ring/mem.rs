//! [`MemRings`]: the same ring code and policy as [`super::XskSet`] over heap memory, with
//! an emulated kernel at the other end of each ring. The emulation follows copy mode
//! (what veth gives): a frame is received into the next fill-ring chunk at
//! [`RX_HEADROOM`], a `sendto` transmits at most [`TX_BATCH`] descriptors, and a
//! transmitted frame completes later (when the test takes it with
//! [`MemRings::take_sent`], like a veth peer freeing the skb).

use std::io;
use std::time::Duration;

use super::raw::{RawDesc, Ring, Umem};
use super::{
    delegate_xsk, Core, Desc, Driver, PortCounters, PortRings, QueueStats, TxKick, XskConfig,
    RX_HEADROOM, TX_BATCH,
};

/// The emulated kernel's ends of one port's rings.
struct KernelPort {
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<RawDesc>,
    tx: Ring<RawDesc>,
    /// Transmitted, not yet taken by the test: bytes and the descriptor address to
    /// complete.
    wire: Vec<(Vec<u8>, u64)>,
    stats: QueueStats,
    kicks: u64,
}

struct MemKernel {
    ports: Vec<KernelPort>,
    frame_size: usize,
}

impl Driver for MemKernel {
    fn tx_kick(&self, _port: usize) -> TxKick {
        TxKick::UntilDrained
    }

    /// Copy-mode transmit: up to TX_BATCH descriptors, each needing a completion-ring slot
    /// (reserved now, filled by `take_sent`); EAGAIN-like (Ok) when stopping early.
    fn kick_tx(&mut self, port: usize, umem: &Umem) -> io::Result<()> {
        let fs = self.frame_size as u64;
        let k = &mut self.ports[port];
        k.kicks += 1;
        let comp_free = k.comp.free(u32::MAX) as usize - k.wire.len();
        let max = TX_BATCH.min(comp_free) as u32;
        let (wire, stats) = (&mut k.wire, &mut k.stats);
        let n = k.tx.consume(max, |d| {
            if d.len == 0 || (d.addr & (fs - 1)) + d.len as u64 > fs {
                // The kernel skips an invalid descriptor without completing it.
                stats.tx_invalid_descs += 1;
                return;
            }
            wire.push((umem.read(d.addr as usize, d.len as usize), d.addr));
        });
        if n == 0 && max > 0 {
            // Asked to transmit from an empty TX ring.
            k.stats.tx_ring_empty_descs += 1;
        }
        Ok(())
    }

    fn wake_rx(&mut self, _port: usize) {}

    fn wait(&mut self, _timeout: Duration) {}

    fn stats(&self, port: usize) -> QueueStats {
        self.ports[port].stats
    }
}

/// In-memory stand-in for [`super::XskSet`] (tests): `ports` ports sharing one UMEM,
/// with hooks to play the kernel (`inject`, `take_sent`).
pub struct MemRings {
    core: Core<MemKernel>,
}

delegate_xsk!(MemRings);

impl MemRings {
    /// `ports` ports, a UMEM of `frames` frames of `frame_size` (2048 or 4096) bytes,
    /// rings of 256 entries (or fewer, to fit the frames), fill rings pre-populated with
    /// min(ring size, frames / (2 x ports)) frames each.
    pub fn new(ports: usize, frame_size: usize, frames: usize) -> MemRings {
        let ring = (frames.next_power_of_two() as u32).clamp(8, 256);
        let mut cfg = XskConfig::new(frame_size, frames);
        cfg.ring_size = ring;
        Self::with_config(ports, cfg).expect("valid MemRings parameters")
    }

    /// With explicit sizes (`bind` and `need_wakeup` are ignored).
    pub fn with_config(ports: usize, cfg: XskConfig) -> io::Result<MemRings> {
        let fill = cfg.validate(ports)?;
        let size = cfg.ring_size;
        let mut rings = Vec::with_capacity(ports);
        let mut kernel = Vec::with_capacity(ports);
        for _ in 0..ports {
            let (fill_u, fill_k) = Ring::heap_pair(size, 0);
            let (comp_u, comp_k) = Ring::heap_pair(size, 0);
            let (rx_u, rx_k) = Ring::heap_pair(size, 0);
            let (tx_u, mut tx_k) = Ring::heap_pair(size, 0);
            // Copy mode: TX always needs a kick.
            tx_k.set_need_wakeup(true);
            rings.push(PortRings {
                fill: fill_u,
                comp: comp_u,
                rx: rx_u,
                tx: tx_u,
            });
            kernel.push(KernelPort {
                fill: fill_k,
                comp: comp_k,
                rx: rx_k,
                tx: tx_k,
                wire: Vec::new(),
                stats: QueueStats::default(),
                kicks: 0,
            });
        }
        let driver = MemKernel {
            ports: kernel,
            frame_size: cfg.frame_size,
        };
        let umem = Umem::heap(cfg.frames, cfg.frame_size);
        Ok(MemRings {
            core: Core::new(rings, driver, umem, &cfg, fill),
        })
    }

    /// The kernel receives `bytes` on `port`: into the next fill-ring chunk at
    /// [`RX_HEADROOM`], then onto the RX ring. False (and counted in the stats) when the
    /// RX ring is full, the fill ring is empty, or the frame does not fit.
    pub fn inject(&mut self, port: usize, bytes: &[u8]) -> bool {
        self.inject_with_meta(port, &[], bytes)
    }

    /// [`MemRings::inject`] of `meta` followed by `bytes`, as one received descriptor: what
    /// the XDP program hands over (its [`XskMeta`](xturn_xdp_common::XskMeta), then the
    /// frame).
    pub fn inject_with_meta(&mut self, port: usize, meta: &[u8], bytes: &[u8]) -> bool {
        let fs = self.core.frame_size;
        let k = &mut self.core.driver.ports[port];
        let len = meta.len() + bytes.len();
        if bytes.is_empty() || RX_HEADROOM + len > fs {
            k.stats.rx_dropped += 1;
            return false;
        }
        if k.rx.free(1) == 0 {
            k.stats.rx_ring_full += 1;
            return false;
        }
        let mut chunk = None;
        k.fill.consume(1, |a| chunk = Some(a & !(fs as u64 - 1)));
        let Some(chunk) = chunk else {
            k.stats.rx_fill_ring_empty_descs += 1;
            k.stats.rx_dropped += 1;
            return false;
        };
        let data = chunk as usize + RX_HEADROOM;
        self.core.umem.write(data, meta);
        self.core.umem.write(data + meta.len(), bytes);
        let n = k.rx.produce(1, || RawDesc {
            addr: data as u64,
            len: len as u32,
            options: 0,
        });
        debug_assert_eq!(n, 1);
        true
    }

    /// What was transmitted on `port` since the last call, in order; their frames are
    /// completed (they return to the free list at the next `service` or `send`).
    pub fn take_sent(&mut self, port: usize) -> Vec<Vec<u8>> {
        let k = &mut self.core.driver.ports[port];
        let wire = std::mem::take(&mut k.wire);
        let mut out = Vec::with_capacity(wire.len());
        let mut it = wire.into_iter();
        let n = k.comp.produce(it.len() as u32, || {
            let (bytes, addr) = it.next().expect("one per produced entry");
            out.push(bytes);
            addr
        });
        assert_eq!(
            n as usize,
            out.len(),
            "completion slots were reserved at transmit"
        );
        out
    }

    /// `sendto` calls the emulated kernel received on `port`.
    pub fn kicks(&self, port: usize) -> u64 {
        self.core.driver.ports[port].kicks
    }

    /// Descriptors on `port`'s TX ring the kernel has not transmitted yet.
    pub fn tx_pending(&mut self, port: usize) -> usize {
        self.core.rings[port].tx.unconsumed() as usize
    }

    /// Set or clear need_wakeup on `port`'s fill ring (as a zero-copy driver would).
    pub fn set_fill_need_wakeup(&mut self, port: usize, on: bool) {
        self.core.driver.ports[port].fill.set_need_wakeup(on);
    }

    /// Test helper: a received descriptor's bytes.
    pub fn bytes(&mut self, d: Desc) -> Vec<u8> {
        let (chunk, off) = self.core.chunk_mut(d.addr);
        chunk[off..off + d.len as usize].to_vec()
    }
}
