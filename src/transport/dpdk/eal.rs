//! The DPDK binding: EAL, an mbuf pool and ports, through the plain-C shim in shim.c. Burst
//! I/O of byte frames; every mbuf is freed on every path. Dropping the last handle stops the
//! port, frees the pool and cleans EAL up (hugepages and runtime files).

use super::config::{DpdkConfig, DPDK_MBUF_BYTES};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

extern "C" {
    fn epx_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    fn epx_eal_cleanup() -> c_int;
    fn epx_errno() -> c_int;
    fn epx_runtime_dir() -> *const c_char;
    fn epx_strerror(e: c_int) -> *const c_char;
    fn epx_port_count() -> u16;
    fn epx_thread_register() -> c_int;
    fn epx_thread_unregister();
    fn epx_link_up(port: u16) -> c_int;
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

/// Frames per burst at most (the shim's limit).
pub const BURST: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("DPDK's EAL is already initialised in this process (it can be, once)")]
    AlreadyInitialised,
    #[error("DPDK needs root here (this process runs as uid {0}): raw virtual devices, huge pages and PCI devices are root's")]
    NotRoot(u32),
    #[error("dpdk.hugepages is on but only {free_mb} MiB of huge pages are free for dpdk.memory_mb {need_mb}: reserve them (./hugepages.sh reserve N) or set dpdk.hugepages: false")]
    NoHugepages { need_mb: u64, free_mb: u64 },
    #[error("EAL init failed with arguments {args:?}: {why}")]
    Eal { args: Vec<String>, why: String },
    #[error("EAL found no port: a --vdev failed to probe (its interface or socket missing?) or no PCI device is bound to vfio-pci (EAL arguments {0:?})")]
    NoPort(Vec<String>),
    #[error("port {port} does not exist (EAL found {count})")]
    BadPort { port: u16, count: u16 },
    #[error("cannot create the mbuf pool of {n} mbufs: {why}")]
    Pool { n: u32, why: String },
    #[error("port {port}: {step} failed: {why}")]
    Port {
        port: u16,
        step: String,
        why: String,
    },
    #[error("port {port}: link still down after {ms} ms (its interface down, or nothing attached to its vhost-user socket?)")]
    LinkDown { port: u16, ms: u64 },
    #[error("an EAL argument holds a NUL byte: {0:?}")]
    Argument(String),
}

fn strerror(e: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe { CStr::from_ptr(epx_strerror(e.abs())) }
        .to_string_lossy()
        .into_owned()
}

fn errno() -> c_int {
    // SAFETY: reads DPDK's per-thread errno.
    unsafe { epx_errno() }
}

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// The Environment Abstraction Layer, once per process; cleaned up when the last pool or
/// port holding it goes.
pub struct Eal {
    /// EAL's runtime directory (/var/run/dpdk/<prefix>), removed at the end if EAL left it
    /// empty.
    runtime_dir: std::path::PathBuf,
}

/// The CPUs this thread may run on.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

/// The first CPU this process may run on (EAL's main lcore when the config names none).
pub fn first_allowed_core() -> usize {
    affinity()
        .and_then(|set| {
            // SAFETY: CPU_ISSET reads the set within CPU_SETSIZE.
            (0..libc::CPU_SETSIZE as usize).find(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        })
        .unwrap_or(0)
}

impl Eal {
    /// Initialises EAL with `args` (as on a DPDK command line, without the program name).
    /// EAL pins the calling thread to its main lcore; the thread's CPUs are given back after,
    /// so the threads a node starts later are pinned by `pipeline.cores`, not by EAL.
    pub fn init(args: &[String]) -> Result<Arc<Eal>, DpdkError> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyInitialised);
        }
        let result = Self::init_once(args);
        if result.is_err() {
            EAL_UP.store(false, Ordering::SeqCst);
        }
        result
    }

    fn init_once(args: &[String]) -> Result<Arc<Eal>, DpdkError> {
        let mut owned = vec![CString::new("ethpaxos").expect("no NUL")];
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| DpdkError::Argument(a.clone()))?);
        }
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        let before = affinity();
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the call (EAL may
        // permute the pointers, not the strings).
        let rc = unsafe { epx_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::Eal {
                args: args.to_vec(),
                why: strerror(errno()),
            });
        }
        if let Some(set) = before {
            // SAFETY: set is a cpu_set_t read by sched_getaffinity above.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        }
        // SAFETY: EAL is initialised; it returns a NUL-terminated path it owns.
        let runtime_dir = unsafe { CStr::from_ptr(epx_runtime_dir()) }
            .to_string_lossy()
            .into_owned()
            .into();
        let eal = Arc::new(Eal { runtime_dir });
        if eal.port_count() == 0 {
            return Err(DpdkError::NoPort(args.to_vec()));
        }
        Ok(eal)
    }

    /// The ports EAL probed (virtual devices and PCI devices).
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised while self lives.
        unsafe { epx_port_count() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: no pool or port is left (each holds an Arc<Eal>); cleanup releases huge
        // pages and runtime files.
        unsafe { epx_eal_cleanup() };
        // EAL removes its files but leaves the directories; remove_dir only takes empty ones
        // (a telemetry socket goes only at exit: run EAL with --no-telemetry).
        let _ = std::fs::remove_dir(&self.runtime_dir);
        if let Some(parent) = self.runtime_dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        EAL_UP.store(false, Ordering::SeqCst);
    }
}

/// A pool of mbufs with 10 KiB data rooms: a jumbo frame fits one segment.
pub struct Pool {
    ptr: *mut c_void,
    eal: Arc<Eal>,
}

// SAFETY: DPDK mempools are safe to use from several threads at once (per-lcore caches,
// a lock-free ring behind them).
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Pool {
    pub fn new(eal: &Arc<Eal>, name: &str, n: u32) -> Result<Arc<Pool>, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Argument(name.into()))?;
        // SAFETY: EAL is initialised (eal lives); the name is a valid C string.
        let ptr = unsafe { epx_pool_create(cname.as_ptr(), n, (DPDK_MBUF_BYTES - 256) as u16) };
        if ptr.is_null() {
            return Err(DpdkError::Pool {
                n,
                why: strerror(errno()),
            });
        }
        Ok(Arc::new(Pool {
            ptr,
            eal: eal.clone(),
        }))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: every port using the pool holds an Arc<Pool> and has been closed.
        unsafe { epx_pool_free(self.ptr) };
    }
}

/// One started port with one RX and one TX queue. Sending and receiving are each serialised
/// by a lock, so a pipeline's RX and TX stages use the two queues at once.
pub struct Port {
    id: u16,
    mac: [u8; 6],
    pool: Arc<Pool>,
    rx: Mutex<()>,
    tx: Mutex<()>,
}

impl Port {
    /// Configures and starts port `id` with `rxd`/`txd` descriptors, in promiscuous mode.
    pub fn start(pool: &Arc<Pool>, id: u16, rxd: u16, txd: u16) -> Result<Port, DpdkError> {
        let count = pool.eal.port_count();
        if id >= count {
            return Err(DpdkError::BadPort { port: id, count });
        }
        let mut step: *const c_char = std::ptr::null();
        // SAFETY: id < count, the pool is live, step is a valid out pointer.
        let rc = unsafe { epx_port_setup(id, pool.ptr, rxd, txd, &mut step) };
        if rc < 0 {
            let step = if step.is_null() {
                "setup".to_string()
            } else {
                // SAFETY: the shim points step at a string literal.
                unsafe { CStr::from_ptr(step) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(DpdkError::Port {
                port: id,
                step,
                why: strerror(rc),
            });
        }
        let mut mac = [0u8; 6];
        // SAFETY: mac has room for the 6 bytes the shim writes.
        unsafe { epx_port_mac(id, mac.as_mut_ptr()) };
        Ok(Port {
            id,
            mac,
            pool: pool.clone(),
            rx: Mutex::new(()),
            tx: Mutex::new(()),
        })
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn link_up(&self) -> bool {
        // SAFETY: the port is started.
        unsafe { epx_link_up(self.id) == 1 }
    }

    /// Waits up to `timeout` for the link to come up.
    pub fn wait_for_link(&self, timeout: Duration) -> Result<(), DpdkError> {
        let deadline = Instant::now() + timeout;
        while !self.link_up() {
            if Instant::now() >= deadline {
                return Err(DpdkError::LinkDown {
                    port: self.id,
                    ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Sends up to `BURST` frames; returns how many the port took (the rest are not sent).
    pub fn send(&self, frames: &[&[u8]]) -> usize {
        register_thread();
        let n = frames.len().min(BURST);
        let mut ptrs = [std::ptr::null::<u8>(); BURST];
        let mut lens = [0u16; BURST];
        for (k, f) in frames[..n].iter().enumerate() {
            ptrs[k] = f.as_ptr();
            lens[k] = f.len().min(u16::MAX as usize) as u16;
        }
        let _queue = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: ptrs/lens describe n live buffers; the shim copies them into mbufs before
        // returning and frees every mbuf the port did not take; the lock keeps the TX queue
        // to one thread.
        unsafe {
            epx_tx(
                self.id,
                self.pool.ptr,
                ptrs.as_ptr(),
                lens.as_ptr(),
                n as u16,
            ) as usize
        }
    }

    /// Receives up to `max` (at most `BURST`) frames, hands each to `f`, then frees their
    /// mbufs.
    pub fn recv(&self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        register_thread();
        let mut bufs = [std::ptr::null_mut::<c_void>(); BURST];
        let mut ptrs = [std::ptr::null::<u8>(); BURST];
        let mut lens = [0u16; BURST];
        let _queue = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the three arrays have room for BURST >= max entries; the lock keeps the RX
        // queue to one thread.
        let got = unsafe {
            epx_rx(
                self.id,
                bufs.as_mut_ptr(),
                ptrs.as_mut_ptr(),
                lens.as_mut_ptr(),
                max.min(BURST) as u16,
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

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started and no handle uses it any more (this is its last).
        unsafe { epx_port_close(self.id) };
    }
}

/// A thread's lcore id, taken on its first burst and given back when it ends.
struct Lcore {
    registered: bool,
}

impl Drop for Lcore {
    fn drop(&mut self) {
        if self.registered && EAL_UP.load(Ordering::SeqCst) {
            // SAFETY: this thread registered itself and EAL is still up.
            unsafe { epx_thread_unregister() };
        }
    }
}

thread_local! {
    static LCORE: std::cell::RefCell<Option<Lcore>> = const { std::cell::RefCell::new(None) };
}

/// Makes the calling thread a DPDK lcore (an lcore id, so mempool caches), once. A thread
/// EAL started already is one; if DPDK has no lcore left the thread still works, uncached.
fn register_thread() {
    LCORE.with(|l| {
        let mut l = l.borrow_mut();
        if l.is_none() {
            // SAFETY: EAL is up (the caller holds a port).
            let rc = unsafe { epx_thread_register() };
            *l = Some(Lcore {
                registered: rc == 1,
            });
        }
    });
}

/// Huge pages free on this machine, in MiB (of the default page size).
fn free_hugepages_mb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let value = |key: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    value("HugePages_Free:") * value("Hugepagesize:") / 1024
}

/// EAL from a node's `dpdk` section and its port started, link up: what a DPDK node needs.
/// Checks what EAL would fail on obscurely (root, huge pages) first.
pub fn open_port(cfg: &DpdkConfig) -> Result<Arc<Port>, DpdkError> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(DpdkError::NotRoot(uid));
    }
    if cfg.hugepages {
        let free_mb = free_hugepages_mb();
        if free_mb < cfg.memory_mb as u64 {
            return Err(DpdkError::NoHugepages {
                need_mb: cfg.memory_mb as u64,
                free_mb,
            });
        }
    }
    let eal = Eal::init(&cfg.eal_command_line(first_allowed_core()))?;
    let pool = Pool::new(&eal, &format!("epx_pool_{}", cfg.port), cfg.mempool_size)?;
    let port = Port::start(&pool, cfg.port, cfg.rx_descriptors, cfg.tx_descriptors)?;
    if cfg.link_timeout_ms > 0 {
        port.wait_for_link(Duration::from_millis(cfg.link_timeout_ms))?;
    }
    Ok(Arc::new(port))
}
