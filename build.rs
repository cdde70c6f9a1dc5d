//! With the `dpdk` feature: compiles src/transport/dpdk/shim.c against the system's DPDK
//! (pkg-config libdpdk; Debian: apt-get install libdpdk-dev) and links DPDK dynamically. EAL
//! then loads its poll-mode drivers from DPDK's pmds directory at start-up. Without the
//! feature nothing happens here: the default build does not need DPDK.

fn main() {
    #[cfg(feature = "dpdk")]
    dpdk();
}

#[cfg(feature = "dpdk")]
fn dpdk() {
    println!("cargo:rerun-if-changed=src/transport/dpdk/shim.c");
    let lib = pkg_config::Config::new()
        .atleast_version("21.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!("the dpdk feature needs DPDK's development files (apt-get install libdpdk-dev pkg-config): {e}")
        });
    let mut build = cc::Build::new();
    build.file("src/transport/dpdk/shim.c");
    for p in &lib.include_paths {
        build.include(p);
    }
    // pkg-config's cflags carry `-include rte_config.h` and a -march DPDK's headers need.
    let cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config runs");
    let cflags = String::from_utf8_lossy(&cflags.stdout).into_owned();
    let mut words = cflags.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(h) = words.next() {
                build.flag("-include").flag(h);
            }
        } else if w.starts_with("-march") || (w.starts_with("-D") && !w.contains(' ')) {
            build.flag(w);
        }
    }
    build.warnings(false).compile("epx_dpdk_shim");
}
