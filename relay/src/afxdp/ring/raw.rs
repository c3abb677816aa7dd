//! Every `unsafe` block of the AF_XDP code: memory shared with the kernel (the UMEM and the
//! four rings of each socket), and the socket syscalls. Everything above this file is
//! safe code over the small API here.
//!
//! Layouts and semantics follow include/uapi/linux/if_xdp.h and
//! Documentation/networking/af_xdp.rst: a ring is a producer index, a consumer index, a
//! flags word and an array of `size` entries (a power of two), each index a free-running
//! `u32` (the slot is `index & (size - 1)`). The producer writes entries, then publishes
//! them with a release store of its index; the consumer reads the producer index with an
//! acquire load, reads the entries, then frees the slots with a release store of its own
//! index (the same barriers as libxdp's `xsk_ring_*` helpers).
//!
//! [`Ring`] is role-neutral: user space *produces* on the fill and TX rings and
//! *consumes* on the RX and completion rings; the in-memory rings of the tests
//! ([`Ring::heap_pair`]) give the other end to an emulated kernel that uses the very same
//! code with the roles swapped.

use std::alloc::Layout;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::QueueStats;

/// `struct xdp_desc`: an RX or TX ring entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

const _: () = assert!(std::mem::size_of::<RawDesc>() == std::mem::size_of::<libc::xdp_desc>());
const _: () = assert!(std::mem::align_of::<RawDesc>() == std::mem::align_of::<libc::xdp_desc>());

/// Memory shared with the kernel (an mmap) or, in tests, with the emulated kernel (a heap
/// allocation). Freed on drop.
pub(super) struct Mem {
    ptr: NonNull<u8>,
    len: usize,
    kind: MemKind,
}

enum MemKind {
    Mmap,
    Heap(Layout),
}

// SAFETY: `Mem` is a plain owner of a memory region; it has no thread affinity, and every
// access to the region goes through `Ring`/`Umem` methods that take `&mut self` (or, for
// the read-only `Umem::read`, `&self` of the single owner), so moving or sharing the
// owner between threads cannot create unsynchronised access by itself.
unsafe impl Send for Mem {}
// SAFETY: see above; `&Mem` gives no access to the region.
unsafe impl Sync for Mem {}

impl Mem {
    /// An anonymous private mapping of `len` bytes, pre-faulted (the UMEM), 2 MiB aligned
    /// and backed by transparent huge pages where the kernel allows them
    /// (`transparent_hugepage` = always or madvise): the forwarder touches a different
    /// frame, so a different 4 KiB page, for every packet, and with 4 KiB pages a UMEM of
    /// several MiB misses the TLB on most of them.
    fn anon(len: usize) -> io::Result<Mem> {
        const HUGE: usize = 2 << 20;
        let total = len
            .checked_add(HUGE)
            .ok_or_else(|| io::Error::other("UMEM size"))?;
        // SAFETY: a new anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as usize;
        let start = base.next_multiple_of(HUGE);
        let end = start + len;
        // SAFETY: the head and the tail of the mapping just made, outside
        // [start, start + len), which is all that is kept; munmap of a zero length is
        // skipped.
        unsafe {
            if start > base {
                libc::munmap(p, start - base);
            }
            if base + total > end {
                libc::munmap(end as *mut libc::c_void, base + total - end);
            }
        }
        let start = start as *mut libc::c_void;
        // SAFETY: advice on the range kept above. MADV_HUGEPAGE fails where THP is compiled
        // out: then it is 4 KiB pages. MADV_POPULATE_WRITE (Linux 5.14) faults the range in
        // like MAP_POPULATE would have; without it every page is written once below.
        let populated = unsafe {
            libc::madvise(start, len, libc::MADV_HUGEPAGE);
            libc::madvise(start, len, libc::MADV_POPULATE_WRITE) == 0
        };
        if !populated {
            for off in (0..len).step_by(4096) {
                // SAFETY: inside the private, writable mapping of `len` bytes.
                unsafe { std::ptr::write_volatile(start.cast::<u8>().add(off), 0) };
            }
        }
        Self::mapped(start, len)
    }

    /// A shared mapping of `len` bytes of socket `fd` at page offset `pgoff` (a ring).
    fn socket(fd: BorrowedFd<'_>, pgoff: libc::off_t, len: usize) -> io::Result<Mem> {
        // SAFETY: a new shared mapping of the socket's ring; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        Self::mapped(p, len)
    }

    fn mapped(p: *mut libc::c_void, len: usize) -> io::Result<Mem> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mem {
            ptr: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
            len,
            kind: MemKind::Mmap,
        })
    }

    /// `len` zeroed bytes on the heap, page-aligned (tests' rings and UMEM).
    fn heap(len: usize) -> Mem {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("heap ring layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Mem {
            ptr,
            len,
            kind: MemKind::Heap(layout),
        }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        match self.kind {
            // SAFETY: the mapping made in `Mem::anon`/`Mem::socket` with this length,
            // unmapped once; no reference into it outlives `self` (rings and UMEM borrow
            // from their owner).
            MemKind::Mmap => unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            },
            // SAFETY: allocated in `Mem::heap` with this layout, freed once.
            MemKind::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
        }
    }
}

/// Entries of a ring: `u64` UMEM addresses (fill, completion) or [`RawDesc`] (RX, TX).
pub(super) trait Entry: Copy {}
impl Entry for u64 {}
impl Entry for RawDesc {}

/// One end of a ring. See the module documentation for the protocol.
pub(super) struct Ring<T: Entry> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    /// Our copies of the two indices: ours is exact, the other side's is refreshed only
    /// when the cached value says there is not enough room or data.
    cached_prod: u32,
    cached_cons: u32,
    _mem: Arc<Mem>,
}

// SAFETY: the pointers point into `_mem`, which the ring keeps alive; the ring is only
// used through `&mut self` (no `Sync`), so moving it to another thread moves exclusive
// use of this end with it.
unsafe impl<T: Entry + Send> Send for Ring<T> {}

/// Byte offsets of a ring's parts in its memory (`struct xdp_ring_offset`).
#[derive(Debug, Clone, Copy)]
pub(super) struct RingOffsets {
    pub producer: u64,
    pub consumer: u64,
    pub flags: u64,
    pub desc: u64,
}

impl From<libc::xdp_ring_offset> for RingOffsets {
    fn from(o: libc::xdp_ring_offset) -> Self {
        RingOffsets {
            producer: o.producer,
            consumer: o.consumer,
            flags: o.flags,
            desc: o.desc,
        }
    }
}

impl<T: Entry> Ring<T> {
    /// A view of a ring of `size` entries laid out per `off` in `mem`. Panics if the
    /// layout does not fit in `mem` or is misaligned (a kernel ABI mismatch).
    fn new(mem: Arc<Mem>, off: RingOffsets, size: u32) -> Ring<T> {
        assert!(
            size.is_power_of_two(),
            "ring size {size} not a power of two"
        );
        let end = off.desc as usize + size as usize * std::mem::size_of::<T>();
        assert!(
            end <= mem.len
                && off.producer as usize + 4 <= mem.len
                && off.consumer as usize + 4 <= mem.len
                && off.flags as usize + 4 <= mem.len,
            "ring layout {off:?} x {size} beyond its {} bytes",
            mem.len
        );
        let at = |o: u64| {
            // SAFETY: `o` is within `mem` (checked above), so the result stays in bounds.
            unsafe { NonNull::new_unchecked(mem.ptr.as_ptr().add(o as usize)) }
        };
        let producer = at(off.producer).cast::<AtomicU32>();
        let consumer = at(off.consumer).cast::<AtomicU32>();
        let flags = at(off.flags).cast::<AtomicU32>();
        let entries = at(off.desc).cast::<T>();
        assert!(
            producer.as_ptr().is_aligned()
                && consumer.as_ptr().is_aligned()
                && flags.as_ptr().is_aligned()
                && entries.as_ptr().is_aligned(),
            "misaligned ring layout {off:?}"
        );
        let mut r = Ring {
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
            _mem: mem,
        };
        r.cached_prod = r.producer().load(Ordering::Acquire);
        r.cached_cons = r.consumer().load(Ordering::Acquire);
        r
    }

    /// Map ring `pgoff` of AF_XDP socket `fd` (its entry count set before with
    /// `set_ring_size`), laid out per `off` from XDP_MMAP_OFFSETS.
    pub fn map(
        fd: BorrowedFd<'_>,
        pgoff: libc::off_t,
        off: RingOffsets,
        size: u32,
    ) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        let mem = Arc::new(Mem::socket(fd, pgoff, len)?);
        Ok(Ring::new(mem, off, size))
    }

    /// Two ends of one in-memory ring of `size` entries (tests: user end, kernel end),
    /// with both indices starting at `start` (to exercise wrap-around).
    pub fn heap_pair(size: u32, start: u32) -> (Ring<T>, Ring<T>) {
        let off = RingOffsets {
            producer: 0,
            consumer: 64,
            flags: 128,
            desc: 192,
        };
        let mem = Arc::new(Mem::heap(192 + size as usize * std::mem::size_of::<T>()));
        let init = Ring::<T>::new(mem.clone(), off, size);
        init.producer().store(start, Ordering::Release);
        init.consumer().store(start, Ordering::Release);
        drop(init);
        // `new` reads both indices into its caches.
        (Ring::new(mem.clone(), off, size), Ring::new(mem, off, size))
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into `_mem` (alive as long as `self`), aligned (checked in
        // `new`); the kernel accesses it only atomically too.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { self.flags.as_ref() }
    }

    pub fn size(&self) -> u32 {
        self.mask + 1
    }

    /// Producer end: slots free for writing, refreshing the consumer index only if fewer
    /// than `want` are known free.
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.size() - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Producer end: write up to `n` entries, each from `next()` (called exactly as many
    /// times as entries written), and publish them. Returns how many were written.
    pub fn produce(&mut self, n: u32, mut next: impl FnMut() -> T) -> u32 {
        let n = n.min(self.free(n));
        for i in 0..n {
            let slot = (self.cached_prod.wrapping_add(i) & self.mask) as usize;
            let v = next();
            // SAFETY: `slot <= mask < size`, within the entry array (checked in `new`);
            // the slot is free (between the consumer and producer indices the other side
            // no longer reads it), so we are its only writer until we publish it below.
            unsafe { self.entries.as_ptr().add(slot).write(v) };
        }
        if n > 0 {
            self.cached_prod = self.cached_prod.wrapping_add(n);
            self.producer().store(self.cached_prod, Ordering::Release);
        }
        n
    }

    /// Producer end: entries published but not yet consumed by the other side.
    pub fn unconsumed(&mut self) -> u32 {
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Consumer end: read up to `max` entries, handing each to `f`, then release their
    /// slots. Returns how many were read.
    pub fn consume(&mut self, max: u32, mut f: impl FnMut(T)) -> u32 {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail < max {
            self.cached_prod = self.producer().load(Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        let n = avail.min(max);
        for i in 0..n {
            let slot = (self.cached_cons.wrapping_add(i) & self.mask) as usize;
            // SAFETY: `slot < size`, within the entry array; the entry was published by
            // the producer's release store that our acquire load observed, and it stays
            // unchanged until we release the slot below.
            let v = unsafe { self.entries.as_ptr().add(slot).read() };
            f(v);
        }
        if n > 0 {
            self.cached_cons = self.cached_cons.wrapping_add(n);
            self.consumer().store(self.cached_cons, Ordering::Release);
        }
        n
    }

    /// The shared (producer, consumer) indices as they are now (diagnostics).
    pub fn indices(&self) -> (u32, u32) {
        (
            self.producer().load(Ordering::Acquire),
            self.consumer().load(Ordering::Acquire),
        )
    }

    /// Consumer end: whether entries are waiting (without consuming any).
    pub fn has_entries(&self) -> bool {
        self.producer().load(Ordering::Acquire) != self.cached_cons
    }

    /// `XDP_RING_NEED_WAKEUP` in the ring's flags.
    pub fn needs_wakeup(&self) -> bool {
        self.flags().load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Emulated kernel end (tests): set or clear `XDP_RING_NEED_WAKEUP`.
    pub fn set_need_wakeup(&mut self, on: bool) {
        let f = if on { libc::XDP_RING_NEED_WAKEUP } else { 0 };
        self.flags().store(f, Ordering::Release);
    }
}

/// The UMEM: `frames` chunks of `frame_size` bytes.
pub(super) struct Umem {
    mem: Mem,
    frame_size: usize,
}

impl Umem {
    /// An anonymous mapping (registered with the kernel by `umem_reg`).
    pub fn map(frames: usize, frame_size: usize) -> io::Result<Umem> {
        let len = frames
            .checked_mul(frame_size)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "UMEM too large"))?;
        Ok(Umem {
            mem: Mem::anon(len)?,
            frame_size,
        })
    }

    /// Heap memory (tests).
    pub fn heap(frames: usize, frame_size: usize) -> Umem {
        Umem {
            mem: Mem::heap(frames * frame_size),
            frame_size,
        }
    }

    /// Chunk `idx`. The caller (the frame accounting above) guarantees that the kernel
    /// does not own the chunk, so nobody else writes it while the borrow lives.
    pub fn chunk_mut(&mut self, idx: usize) -> &mut [u8] {
        let start = idx * self.frame_size;
        assert!(
            start + self.frame_size <= self.mem.len,
            "chunk {idx} out of UMEM"
        );
        // SAFETY: in bounds (checked); `&mut self` makes this the only borrow of the UMEM
        // from user space, and the kernel does not write a chunk user space owns.
        unsafe { std::slice::from_raw_parts_mut(self.mem.ptr.as_ptr().add(start), self.frame_size) }
    }

    /// Ask the CPU to start loading the cache line holding byte `at` (nothing if `at` is
    /// outside the UMEM or on other architectures than x86-64). Received frames were
    /// written by the kernel a while ago: their first touch stalls on memory otherwise.
    #[inline]
    pub fn prefetch(&self, at: usize) {
        #[cfg(target_arch = "x86_64")]
        if at < self.mem.len {
            // SAFETY: a prefetch never faults and reads nothing into the program; the
            // address is inside the mapping anyway.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(self.mem.ptr.as_ptr().add(at).cast::<i8>());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// Copy `bytes` into the UMEM at byte offset `at` (the emulated kernel's receive).
    pub fn write(&mut self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.mem.len, "write beyond the UMEM");
        // SAFETY: in bounds (checked); `&mut self` excludes any other user-space borrow;
        // source and destination cannot overlap (`bytes` is not in the UMEM: no safe
        // borrow of it can coexist with `&mut self`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.mem.ptr.as_ptr().add(at),
                bytes.len(),
            )
        }
    }

    /// Copy `len` bytes from byte offset `at` (the emulated kernel's transmit).
    pub fn read(&self, at: usize, len: usize) -> Vec<u8> {
        assert!(at + len <= self.mem.len, "read beyond the UMEM");
        let mut v = vec![0u8; len];
        // SAFETY: in bounds (checked); only the emulated kernel calls this, on a chunk it
        // owns (queued for TX), which no `&mut` borrow can cover (`chunk_mut` needs
        // `&mut self` and user ownership).
        unsafe { std::ptr::copy_nonoverlapping(self.mem.ptr.as_ptr().add(at), v.as_mut_ptr(), len) }
        v
    }
}

// ---- sockets --------------------------------------------------------------------------

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new AF_XDP socket.
pub(super) fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = check(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// getsockopt into a zeroed `T`; returns it and the length the kernel wrote.
fn getsockopt<T: Copy>(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<(T, usize)> {
    // SAFETY: the libc types used here are plain-old-data structs for which all-zero
    // bytes are a valid value.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a live value of `len` bytes; the kernel writes at most `len`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok((v, len as usize))
}

/// XDP_UMEM_REG: register `umem` (aligned chunks of `frame_size`, no extra headroom).
pub(super) fn umem_reg(fd: BorrowedFd<'_>, umem: &Umem) -> io::Result<()> {
    let reg = libc::xdp_umem_reg {
        addr: umem.mem.ptr.as_ptr() as u64,
        len: umem.mem.len as u64,
        chunk_size: umem.frame_size as u32,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(fd, libc::XDP_UMEM_REG, &reg)
}

/// Set the entry count of ring `opt` (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING,
/// XDP_RX_RING, XDP_TX_RING).
pub(super) fn set_ring_size(fd: BorrowedFd<'_>, opt: libc::c_int, size: u32) -> io::Result<()> {
    setsockopt(fd, opt, &size)
}

/// The four rings' layouts (rx, tx, fill, completion). Needs the ring `flags` field
/// (Linux 5.4+).
pub(super) fn mmap_offsets(fd: BorrowedFd<'_>) -> io::Result<[RingOffsets; 4]> {
    let (o, len): (libc::xdp_mmap_offsets, usize) = getsockopt(fd, libc::XDP_MMAP_OFFSETS)?;
    if len < std::mem::size_of::<libc::xdp_mmap_offsets>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel without AF_XDP ring flags (need_wakeup): Linux 5.4 or later needed",
        ));
    }
    Ok([o.rx.into(), o.tx.into(), o.fr.into(), o.cr.into()])
}

/// Page offsets of the four rings for mmap.
pub(super) const PGOFF_RX: libc::off_t = libc::XDP_PGOFF_RX_RING;
pub(super) const PGOFF_TX: libc::off_t = libc::XDP_PGOFF_TX_RING;
pub(super) const PGOFF_FILL: libc::off_t = libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t;
pub(super) const PGOFF_COMP: libc::off_t = libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t;

/// bind(2) to queue `queue` of interface `ifindex` with `flags` (XDP_ZEROCOPY, XDP_COPY,
/// XDP_USE_NEED_WAKEUP, or XDP_SHARED_UMEM with the UMEM owner's socket `shared`).
pub(super) fn bind(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    queue: u32,
    flags: u16,
    shared: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let sa = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared.map_or(0, |s| s.as_raw_fd() as u32),
    };
    // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of_val(&sa) as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Whether the bound socket runs in zero-copy mode (XDP_OPTIONS).
pub(super) fn zero_copy(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let (o, _): (libc::xdp_options, usize) = getsockopt(fd, libc::XDP_OPTIONS)?;
    Ok(o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

/// XDP_STATISTICS (fields a kernel older than 5.9 does not report stay 0).
pub(super) fn statistics(fd: BorrowedFd<'_>) -> io::Result<QueueStats> {
    let (s, _): (libc::xdp_statistics, usize) = getsockopt(fd, libc::XDP_STATISTICS)?;
    Ok(QueueStats {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: s.tx_ring_empty_descs,
    })
}

/// Kick TX: `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`.
pub(super) fn kick_tx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length send with null buffers, which AF_XDP defines as "process
    // the TX ring"; nothing is read from user memory.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Set the calling thread's nice value (setpriority(2) on its thread id). Lowering it
/// below 0 needs CAP_SYS_NICE.
pub(super) fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no arguments; setpriority only reads its integer arguments.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The calling thread's nice value (tests).
#[cfg(test)]
pub(super) fn thread_nice() -> i32 {
    // SAFETY: gettid has no arguments; getpriority only reads its integer arguments (-1
    // is a valid value here, errors are not expected for the caller's own thread).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// Wake RX (the fill ring's need_wakeup): `recvfrom(fd, NULL, 0, MSG_DONTWAIT, ..)`.
pub(super) fn wake_rx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length receive with null buffers; nothing is written to user memory.
    let r = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// ppoll(2) for POLLIN on `fds` for at most `timeout`; returns how many are ready.
pub(super) fn poll_in(fds: &[RawFd], timeout: Duration) -> io::Result<usize> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `p` is a live array of `p.len()` pollfds, `ts` a live timespec; no signal
    // mask is passed.
    let r = unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Index of interface `name` in the calling thread's network namespace.
pub(super) fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name:?} in this network namespace"),
        ))
    } else {
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_around_u32() {
        // Indices start just below u32::MAX so that they wrap while in use.
        let (mut user, mut kernel) = Ring::<u64>::heap_pair(8, u32::MAX - 3);
        let mut next = 0u64;
        let mut expect = 0u64;
        for round in 0..10 {
            let n = user.produce(5 + round % 4, || {
                next += 1;
                next
            });
            assert!(n <= 8);
            let mut got = Vec::new();
            kernel.consume(u32::MAX, |v| got.push(v));
            for v in got {
                expect += 1;
                assert_eq!(v, expect);
            }
            assert_eq!(user.unconsumed(), 0);
        }
        assert_eq!(expect, next);
        assert!(expect > 40);
    }

    #[test]
    fn producer_stops_at_capacity() {
        let (mut user, mut kernel) = Ring::<RawDesc>::heap_pair(4, 0);
        assert_eq!(user.free(1), 4);
        assert_eq!(user.produce(10, RawDesc::default), 4);
        assert_eq!(user.free(1), 0);
        assert_eq!(user.produce(1, RawDesc::default), 0);
        assert!(kernel.has_entries());
        assert_eq!(kernel.consume(3, |_| {}), 3);
        assert_eq!(user.unconsumed(), 1);
        assert_eq!(user.free(3), 3);
        assert!(!user.needs_wakeup());
        kernel.set_need_wakeup(true);
        assert!(user.needs_wakeup());
    }
}
