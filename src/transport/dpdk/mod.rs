//! DPDK (cargo feature `dpdk`): the Environment Abstraction Layer, one port, and burst I/O of
//! our frames through the C shim in shim.c. This is the binding and its lifecycle; the
//! node's transport on top of it is the DPDK issue's next step.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

extern "C" {
    fn epx_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    fn epx_eal_cleanup() -> c_int;
    fn epx_errno() -> c_int;
    fn epx_runtime_dir() -> *const c_char;
    fn epx_strerror(e: c_int) -> *const c_char;
    fn epx_port_count() -> u16;
    fn epx_pool_create(name: *const c_char, n: u32, data_room: u16) -> *mut c_void;
    fn epx_pool_free(pool: *mut c_void);
    fn epx_port_setup(
        port: u16,
        pool: *mut c_void,
        rxd: u16,
        txd: u16,
        step: *mut *const c_char,
    ) -> c_int;
    fn epx_port_close(port: u16);
    fn epx_port_mac(port: u16, out: *mut u8) -> c_int;
    fn epx_tx(
        port: u16,
        pool: *mut c_void,
        frames: *const *const u8,
        lens: *const u16,
        n: u16,
    ) -> u16;
    fn epx_rx(
        port: u16,
        bufs: *mut *mut c_void,
        ptrs: *mut *const u8,
        lens: *mut u16,
        n: u16,
    ) -> u16;
    fn epx_free_bulk(bufs: *mut *mut c_void, n: u16);
}

#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("DPDK's EAL is already initialised in this process (it can be, once)")]
    AlreadyInitialised,
    #[error("EAL init failed with arguments {args:?}: {why} (root? hugepages, or --no-huge?)")]
    Eal { args: Vec<String>, why: String },
    #[error("EAL found no port: a --vdev failed or no PCI device is bound (EAL arguments {0:?})")]
    NoPort(Vec<String>),
    #[error("port {port} does not exist (EAL found {count})")]
    BadPort { port: u16, count: u16 },
    #[error("cannot create the mbuf pool: {0}")]
    Pool(String),
    #[error("port {port}: {step} failed: {why}")]
    Port {
        port: u16,
        step: String,
        why: String,
    },
    #[error("an EAL argument holds a NUL byte: {0:?}")]
    Argument(String),
}

fn strerror(e: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe { CStr::from_ptr(epx_strerror(e.abs())) }
        .to_string_lossy()
        .into_owned()
}

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// DPDK initialised with one port started; dropping it stops the port, frees the pool and
/// cleans EAL up (its hugepages and runtime files).
pub struct Dpdk {
    port: u16,
    pool: *mut c_void,
    mac: [u8; 6],
    /// EAL's runtime directory (/var/run/dpdk/<prefix>), removed at the end if EAL left it
    /// empty.
    runtime_dir: std::path::PathBuf,
}

// SAFETY: the pool and port are used only through &mut self (one thread at a time); DPDK's
// mempool and a single queue pair are safe to use from whichever thread holds them.
unsafe impl Send for Dpdk {}

/// Frames per burst (the shim's limit).
pub const BURST: usize = 64;

impl Dpdk {
    /// Initialises EAL with `args` (as on a DPDK command line, without the program name) and
    /// starts `port` with one RX and one TX queue of `descriptors` entries.
    pub fn init(args: &[String], port: u16, descriptors: u16) -> Result<Dpdk, DpdkError> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyInitialised);
        }
        let mut owned = vec![CString::new("ethpaxos").expect("no NUL")];
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| DpdkError::Argument(a.clone()))?);
        }
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the call (EAL may
        // permute the pointers, not the strings).
        let rc = unsafe { epx_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            // SAFETY: reads DPDK's per-thread errno.
            let why = strerror(unsafe { epx_errno() });
            return Err(DpdkError::Eal {
                args: args.to_vec(),
                why,
            });
        }
        let fail = |e: DpdkError| {
            // SAFETY: EAL was initialised above and nothing else uses it yet.
            unsafe { epx_eal_cleanup() };
            Err(e)
        };
        // SAFETY: EAL is initialised.
        let count = unsafe { epx_port_count() };
        if count == 0 {
            return fail(DpdkError::NoPort(args.to_vec()));
        }
        if port >= count {
            return fail(DpdkError::BadPort { port, count });
        }
        let name = CString::new(format!("epx_pool_{port}")).expect("no NUL");
        // SAFETY: EAL is initialised; the name is a valid C string. 10240-byte buffers hold
        // jumbo frames in one segment.
        let pool = unsafe { epx_pool_create(name.as_ptr(), 8191, 10240 + 128) };
        if pool.is_null() {
            // SAFETY: reads DPDK's per-thread errno.
            return fail(DpdkError::Pool(strerror(unsafe { epx_errno() })));
        }
        let mut step: *const c_char = std::ptr::null();
        // SAFETY: port < count, pool is a live mempool, step is a valid out pointer.
        let rc = unsafe { epx_port_setup(port, pool, descriptors, descriptors, &mut step) };
        if rc < 0 {
            let step = if step.is_null() {
                "setup".to_string()
            } else {
                // SAFETY: the shim points step at a string literal.
                unsafe { CStr::from_ptr(step) }
                    .to_string_lossy()
                    .into_owned()
            };
            // SAFETY: the pool was created above and no port uses it.
            unsafe { epx_pool_free(pool) };
            return fail(DpdkError::Port {
                port,
                step,
                why: strerror(rc),
            });
        }
        let mut mac = [0u8; 6];
        // SAFETY: mac has room for the 6 bytes the shim writes.
        unsafe { epx_port_mac(port, mac.as_mut_ptr()) };
        // SAFETY: EAL is initialised; it returns a NUL-terminated path it owns.
        let runtime_dir = unsafe { CStr::from_ptr(epx_runtime_dir()) }
            .to_string_lossy()
            .into_owned()
            .into();
        Ok(Dpdk {
            port,
            pool,
            mac,
            runtime_dir,
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Sends up to `BURST` frames; returns how many the port took (the rest are not sent).
    pub fn send(&mut self, frames: &[&[u8]]) -> usize {
        let n = frames.len().min(BURST);
        let ptrs: Vec<*const u8> = frames[..n].iter().map(|f| f.as_ptr()).collect();
        let lens: Vec<u16> = frames[..n]
            .iter()
            .map(|f| f.len().min(u16::MAX as usize) as u16)
            .collect();
        // SAFETY: ptrs/lens describe n live buffers; the shim copies them into mbufs before
        // returning and frees every mbuf the port did not take.
        unsafe { epx_tx(self.port, self.pool, ptrs.as_ptr(), lens.as_ptr(), n as u16) as usize }
    }

    /// Receives up to `BURST` frames, hands each to `f`, then frees their mbufs.
    pub fn recv(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut bufs = [std::ptr::null_mut::<c_void>(); BURST];
        let mut ptrs = [std::ptr::null::<u8>(); BURST];
        let mut lens = [0u16; BURST];
        // SAFETY: the three arrays have room for BURST entries.
        let got = unsafe {
            epx_rx(
                self.port,
                bufs.as_mut_ptr(),
                ptrs.as_mut_ptr(),
                lens.as_mut_ptr(),
                BURST as u16,
            )
        } as usize;
        for k in 0..got {
            // SAFETY: each (ptr, len) is the data of a received mbuf that stays alive until
            // the free below.
            f(unsafe { std::slice::from_raw_parts(ptrs[k], lens[k] as usize) });
        }
        if got > 0 {
            // SAFETY: bufs holds `got` mbufs from this burst, each freed exactly once.
            unsafe { epx_free_bulk(bufs.as_mut_ptr(), got as u16) };
        }
        got
    }
}

impl Drop for Dpdk {
    fn drop(&mut self) {
        // SAFETY: the port was started by init and the pool is no longer used after it stops;
        // EAL cleanup releases hugepages and runtime files.
        unsafe {
            epx_port_close(self.port);
            epx_pool_free(self.pool);
            epx_eal_cleanup();
        }
        // EAL removes its files but leaves the directories; remove_dir only takes empty ones
        // (the telemetry socket goes only at exit: run EAL with --no-telemetry).
        let _ = std::fs::remove_dir(&self.runtime_dir);
        if let Some(parent) = self.runtime_dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        EAL_UP.store(false, Ordering::SeqCst);
    }
}

/// The node transport over a DPDK port: the same frames, checks and counters as AF_PACKET.
pub struct DpdkTransport {
    dpdk: Dpdk,
    me: crate::protocol::NodeId,
    check: super::FrameCheck,
    max_frame: usize,
    peers: std::collections::HashMap<crate::protocol::NodeId, [u8; 6]>,
    tx: Vec<Vec<u8>>,
    queued: usize,
    inbox: std::collections::VecDeque<(crate::protocol::NodeId, crate::protocol::Message)>,
    pub stats: super::TransportStats,
}

impl DpdkTransport {
    pub fn open(
        me: crate::protocol::NodeId,
        cfg: &crate::config::DpdkConfig,
        peers: std::collections::HashMap<crate::protocol::NodeId, [u8; 6]>,
        check: super::FrameCheck,
        max_frame: usize,
    ) -> Result<Self, DpdkError> {
        let dpdk = Dpdk::init(&cfg.eal_args, cfg.port, cfg.descriptors)?;
        Ok(DpdkTransport {
            dpdk,
            me,
            check,
            max_frame,
            peers,
            tx: Vec::new(),
            queued: 0,
            inbox: std::collections::VecDeque::new(),
            stats: super::TransportStats::default(),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.dpdk.mac()
    }

    /// Queues one message for the next `flush`.
    pub fn send(
        &mut self,
        env: &crate::protocol::Envelope,
    ) -> Result<(), crate::wire::EncodeError> {
        let Some(dst) = self.peers.get(&env.to).copied() else {
            self.stats.send_errors += 1;
            return Ok(());
        };
        // Frame buffers are kept across flushes: tx[..queued] wait, the rest are spare.
        if self.queued == self.tx.len() {
            self.tx.push(Vec::with_capacity(self.max_frame));
        }
        let buf = &mut self.tx[self.queued];
        self.check
            .encode(dst, self.dpdk.mac(), self.me, &env.msg, self.max_frame, buf)?;
        self.queued += 1;
        if self.queued >= BURST {
            self.flush();
        }
        Ok(())
    }

    /// Bursts every queued frame out; a frame the port does not take is counted as lost.
    pub fn flush(&mut self) {
        for chunk in self.tx[..self.queued].chunks(BURST) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            let sent = self.dpdk.send(&refs);
            self.stats.sent += sent as u64;
            self.stats.send_errors += (chunk.len() - sent) as u64;
        }
        self.queued = 0;
    }

    /// Polls the port up to `timeout` (zero: one poll) for a frame from a member. Between
    /// empty polls it sleeps 20 us: a poll-mode port still costs a core when busy, not when
    /// idle.
    pub fn recv(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<(crate::protocol::NodeId, crate::protocol::Message)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Some(m);
            }
            let (mac, check, peers, stats, inbox) = (
                self.dpdk.mac(),
                &self.check,
                &self.peers,
                &mut self.stats,
                &mut self.inbox,
            );
            self.dpdk.recv(|raw| {
                // Our own frames, and other EtherTypes (a port sees all of the link's
                // traffic, IPv6 neighbour discovery included), are not ours to count.
                if raw.len() >= 14
                    && (raw[6..12] == mac || raw[12..14] != crate::wire::ETHERTYPE.to_be_bytes())
                {
                    return;
                }
                stats.received += 1;
                inbox.extend(check.accept_ethernet(raw, mac, peers, stats));
            });
            if !self.inbox.is_empty() {
                continue;
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }
}
